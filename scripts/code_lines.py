#!/usr/bin/env python3
"""Distinct 64-byte lines of machine code executed, from a callgrind file written with
`--dump-instr=yes` (used by scripts/hit_footprint.sh).

    code_lines.py FILE            prints the line count
    code_lines.py FILE BASE       also lists, by function, the lines FILE has and BASE lacks
"""
import collections
import re
import sys


def code_lines(path):
    """Returns {line address: function name} for every executed instruction's line."""
    positions, previous, names, lines = [], {}, {}, {}
    function = ""
    with open(path) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if raw.startswith("positions:"):
                positions = raw.split()[1:]
                continue
            if not raw or raw[0] not in "0123456789+-*":
                named = re.match(r"c?fn=\((\d+)\)(?: (.*))?", raw)
                if named:
                    if named.group(2):
                        names[named.group(1)] = named.group(2)
                    if raw.startswith("fn="):
                        function = names.get(named.group(1), named.group(1))
                continue
            fields = raw.split()
            for name, token in zip(positions, fields):
                if token == "*":
                    value = previous.get(name, 0)
                elif token[0] in "+-":
                    value = previous.get(name, 0) + int(token)
                else:
                    value = int(token, 16) if token.startswith("0x") else int(token)
                previous[name] = value
            lines.setdefault(previous[positions[0]] >> 6, function)
    return lines


def main():
    lines = code_lines(sys.argv[1])
    print(len(lines))
    if len(sys.argv) > 2:
        extra = set(lines) - set(code_lines(sys.argv[2]))
        by_function = collections.Counter(lines[line] for line in extra)
        for function, count in by_function.most_common(40):
            print(f"{count:5d}  {function[:140]}")


if __name__ == "__main__":
    main()
