"""The text syntax of regions and operations, shared by the CLI, the studio's operation box and the API."""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..codes import CodeGrid
from .operations import (
    EditResult,
    RegenerateSettings,
    blend_region,
    copy_region,
    randomize_region,
    repeat_region,
    reverse_region,
    set_codes,
    shift_region,
    span_text,
    swap_regions,
)
from .regenerate import regenerate
from .regions import EditError, Region, column_at, columns_in

if TYPE_CHECKING:
    from ..codec import Codec

REGION_SYNTAX = "LEVELS@START-END[/BANDLO-BANDHI], e.g. Timbre@1.0-2.0 or Structure+Timbre@0.5-1.5/0-3"


@dataclass(frozen=True)
class OperationSpec:
    """One operation of the text syntax: how many regions it takes, its options, and a one-line help."""

    regions: int
    options: tuple[str, ...]
    help: str


# The table the CLI's flags, the studio's operation box and the API all read.
OPERATIONS: dict[str, OperationSpec] = {
    "set": OperationSpec(1, (), "REGION=CODE: fill a region with one code"),
    "copy": OperationSpec(1, ("to", "band"), "[FILE:]REGION: paste it at --to SECONDS"),
    "swap": OperationSpec(2, (), "REGION REGION: exchange two equal-size regions (either may be FILE:REGION)"),
    "blend": OperationSpec(1, ("to", "amount"), "[FILE:]REGION: move the region at --to toward it by --amount 0-1"),
    "reverse": OperationSpec(1, (), "REGION: reverse its columns in time"),
    "shift": OperationSpec(1, ("by",), "REGION: move it by --by SECONDS"),
    "repeat": OperationSpec(1, ("times",), "REGION: play it --times N in a row"),
    "randomize": OperationSpec(1, ("seed",), "REGION: draw codes from training usage"),
    "regenerate": OperationSpec(1, ("strength", "temperature", "seed", "steps"),
                                "REGION: redraw it with the model's prior so it fits its surroundings "
                                "(--strength 0-1, --temperature, --seed, --steps)"),
}


_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"   # 2, 2.5, .5: one way to match each, so no backtracking
# Each part matches in one way only: nested repeats over the same characters (a level name that may hold spaces,
# then spaces, then "+") made a long malformed region take exponential time (6 levels: 4.5 s; 7: over a minute).
_REGION_RE = re.compile(
    rf"(?P<levels>[A-Za-z0-9_ \t+]+)@\s*(?P<t0>{_NUMBER})\s*-\s*(?P<t1>{_NUMBER})"
    r"\s*(?:/\s*(?P<b0>[0-9]+)\s*(?:-\s*(?P<b1>[0-9]+))?)?")


def parse_region(text: str, grid: CodeGrid) -> Region:
    """'LEVELS@START-END[/BANDLO-BANDHI]' (levels by name joined with +, seconds, bands inclusive) -> Region."""
    m = _REGION_RE.fullmatch(str(text).strip())
    levels = tuple(p.strip() for p in m["levels"].split("+")) if m else ()
    if not m or not all(levels):
        raise EditError(f"cannot read region {text!r}; write {REGION_SYNTAX}")
    resolved: list[int | str] = [_digits(p, "level") if p.isdigit() else p for p in levels]
    bands = None
    if m["b0"] is not None:
        b0 = _digits(m["b0"], "band")
        bands = (b0, _digits(m["b1"], "band") if m["b1"] is not None else b0)
    return Region.from_seconds(grid, resolved, float(m["t0"]), float(m["t1"]), bands)


def _digits(text: str, what: str) -> int:
    """An ASCII run of digits -> int (EditError past 18 digits: no grid is that large, and int() refuses 4300+)."""
    if len(text.lstrip("0")) > 18:
        raise EditError(f"{what} {text[:20]}{'...' if len(text) > 20 else ''} is far outside this grid")
    return int(text)


OPERATION_SYNTAX = ("set REGION=CODE | swap REGION REGION | copy [B:]REGION --to SECONDS [--band ROW] | "
                    "blend [B:]REGION --to SECONDS --amount T | reverse REGION | shift REGION --by SECONDS | "
                    "repeat REGION --times N | randomize REGION [--seed N] | "
                    "regenerate REGION [--strength S] [--temperature T] [--seed N] [--steps N]")


def _split_op(op: str) -> tuple[str, list[str], dict[str, str]]:
    try:
        tokens = shlex.split(str(op))
    except ValueError as exc:
        raise EditError(f"cannot read operation {op!r} ({exc})") from exc
    if not tokens or tokens[0].lower() not in OPERATIONS:
        raise EditError(f"unknown operation {op!r}; operations are: {OPERATION_SYNTAX}")
    kind, rest = tokens[0].lower(), tokens[1:]
    positional: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--"):
            if tok[2:] not in OPERATIONS[kind].options:
                allowed = ", ".join(f"--{o}" for o in OPERATIONS[kind].options) or "none"
                raise EditError(f"{kind} does not take {tok} (options: {allowed})")
            if i + 1 >= len(rest):
                raise EditError(f"{tok} needs a value")
            options[tok] = rest[i + 1]
            i += 2
        else:
            positional.append(tok)
            i += 1
    if len(positional) != OPERATIONS[kind].regions:
        raise EditError(f"{kind} takes {OPERATIONS[kind].regions} region(s), got {len(positional)}: {op!r}")
    return kind, positional, options


def _need(options: dict[str, str], name: str, kind: str) -> str:
    if name not in options:
        raise EditError(f"{kind} needs {name}")
    return options[name]


def _number(text: str, what: str, cast=float):
    try:
        value = cast(text)
    except (TypeError, ValueError, OverflowError):  # int() of 4300+ digits is a ValueError too
        raise EditError(f"{what} must be a {'whole ' if cast is int else ''}number, got {text!r}") from None
    if not math.isfinite(value):
        raise EditError(f"{what} must be a finite number, got {text!r}")
    return value


def _match_width(region: Region, like: Region, grid: CodeGrid) -> Region:
    """Equal durations can snap to widths one column apart (1.0-2.0 s vs 2.0-3.0 s): give `region` like's width."""
    if abs(region.num_columns - like.num_columns) != 1:
        return region
    fitted = Region(region.levels, region.r0, region.r1, region.c0, region.c0 + like.num_columns - 1)
    if fitted.c1 >= grid.num_columns:  # at the clip's end: keep the end, move the start
        fitted = Region(region.levels, region.r0, region.r1, region.c1 - like.num_columns + 1, region.c1)
    fitted.validate(grid)
    return fitted


def apply_operation(codec: Codec, grid: CodeGrid, op: str, other: CodeGrid | None = None) -> EditResult:
    """One operation in the CLI's text syntax (see OPERATION_SYNTAX) applied to `grid`.

    A region written "B:REGION" lies in `other` (the second clip); without the prefix it is in `grid`.
    Times snap outward to whole columns, so two equally long swap regions can come out one column
    apart; the second then takes the first's width.
    """
    kind, regions, options = _split_op(op)

    def locate(text: str) -> tuple[CodeGrid, Region, bool]:
        if text[:2].upper() == "B:":
            if other is None:
                raise EditError(f"{text!r} refers to clip B, but no second clip was given")
            return other, parse_region(text[2:], other), True
        return grid, parse_region(text, grid), False

    if kind == "set":
        text, sep, code = regions[0].rpartition("=")
        if not sep:
            raise EditError(f"set needs REGION=CODE, got {regions[0]!r}")
        g, region, in_b = locate(text)
        if in_b:
            raise EditError("set edits this clip; drop the B: prefix")
        return set_codes(grid, region, _number(code, "code", int), codec.codebook_size)
    if kind == "swap":
        (ga, ra, a_in_b), (gb, rb, b_in_b) = locate(regions[0]), locate(regions[1])
        if a_in_b and b_in_b:
            raise EditError("swap needs at least one region in this clip (without B:)")
        if a_in_b:
            (ga, ra, a_in_b), (gb, rb, b_in_b) = (gb, rb, b_in_b), (ga, ra, a_in_b)
        return swap_regions(grid, ra, gb, _match_width(rb, ra, gb), same_clip=not b_in_b)
    if kind in ("copy", "blend"):
        src, region, in_b = locate(regions[0])
        dst_c0 = column_at(grid, _need(options, "--to", kind), "--to")
        if kind == "copy":
            band = _number(options["--band"], "--band", int) if "--band" in options else None
            return copy_region(src, region, grid, dst_c0, band, same_clip=not in_b)
        amount = _number(_need(options, "--amount", kind), "--amount")
        dst = Region(region.levels, region.r0, region.r1, dst_c0, dst_c0 + region.num_columns - 1)
        if dst.c1 >= grid.num_columns:
            raise EditError(f"blend target {span_text(grid, dst_c0, dst.c1)} runs past the clip's end "
                            f"({grid.duration_s:.3f} s)")
        return blend_region(codec, grid, dst, src, region, amount)
    g, region, in_b = locate(regions[0])
    if in_b:
        raise EditError(f"{kind} edits this clip; drop the B: prefix")
    if kind == "reverse":
        return reverse_region(grid, region)
    if kind == "shift":
        by = _number(_need(options, "--by", kind), "--by")
        return shift_region(grid, region, columns_in(by, grid.seconds_per_column))
    if kind == "repeat":
        return repeat_region(grid, region, _number(_need(options, "--times", kind), "--times", int))
    if kind == "regenerate":
        return regenerate(codec, grid, region, regenerate_settings(options))[0]
    return randomize_region(grid, region, codec.info.usage or [[1] * codec.codebook_size] * grid.num_levels,
                            _number(options.get("--seed", "0"), "--seed", int))


def regenerate_settings(options: dict[str, str], candidates: int = 1) -> RegenerateSettings:
    """--strength / --temperature / --seed / --steps text -> RegenerateSettings (EditError for bad values)."""
    defaults = RegenerateSettings()
    return RegenerateSettings(
        strength=_number(options.get("--strength", str(defaults.strength)), "--strength"),
        temperature=_number(options.get("--temperature", str(defaults.temperature)), "--temperature"),
        seed=_number(options.get("--seed", "0"), "--seed", int),
        steps=_number(options.get("--steps", str(defaults.steps)), "--steps", int),
        candidates=candidates)
