"""Region-level code editing: regions and the seconds->columns rule, operations, undo history, text syntax.

One job per module: `regions` (Region, column_of / end_column_of / columns_in), `operations`
(set/copy/swap/blend/shift/repeat/reverse/randomize -> EditResult), `history` (EditHistory),
`regenerate` (regenerate / regenerate_region: the prior's draws as EditResults), `syntax` (parse_region,
apply_operation, the OPERATIONS table the CLI reads).
"""

from .history import HISTORY_FORMAT, HISTORY_VERSION, MIN_HISTORY, ActiveDonor, EditHistory, Step
from .operations import (
    DonorPatch,
    EditResult,
    blend_region,
    copy_region,
    randomize_region,
    repeat_region,
    reverse_region,
    set_codes,
    shift_region,
    swap_regions,
)
from .regenerate import regenerate, regenerate_region, selection_cells
from .regions import (
    SNAP_EPS,
    EditError,
    Region,
    column_at,
    column_of,
    column_start,
    columns_in,
    end_column_of,
    last_column_in,
    last_column_of,
)
from .syntax import OPERATION_SYNTAX, OPERATIONS, REGION_SYNTAX, OperationSpec, apply_operation, parse_region

__all__ = [
    "HISTORY_FORMAT", "HISTORY_VERSION", "MIN_HISTORY", "OPERATIONS", "OPERATION_SYNTAX", "REGION_SYNTAX", "SNAP_EPS",
    "ActiveDonor", "DonorPatch", "EditError", "EditHistory", "EditResult", "OperationSpec", "Region", "Step",
    "apply_operation", "blend_region", "column_at", "column_of", "column_start", "columns_in", "copy_region",
    "end_column_of", "last_column_in", "last_column_of", "parse_region", "randomize_region", "regenerate",
    "regenerate_region", "repeat_region", "reverse_region", "selection_cells", "set_codes", "shift_region",
    "swap_regions",
]
