"""Atomic read-modify-write instructions per request, from a callgrind profile made with
`--dump-instr=yes`: each executed instruction of `binary` that `objdump` shows with a `lock`
prefix (or an `xchg` with memory, locked by itself), counted by callgrind, summed per function.
Instruction counts do not show what these cost: each one is a full barrier, some 20 cycles
uncontended. Used by `scripts/proxy_instructions.sh --atomics`.
"""
import collections, re, subprocess


def locked_instructions(binary):
    """Address -> function of each locked instruction in `binary` (file addresses, as callgrind
    gives them for a position-independent executable)."""
    locked, function = {}, None
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", binary],
                         capture_output=True, text=True, check=True).stdout
    for line in dis.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if m:
            function = m.group(2)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if m and (m.group(2).startswith("lock ") or (m.group(2).startswith("xchg") and "(" in m.group(2))):
            locked[int(m.group(1), 16)] = function
    return locked


def atomics(profile, binary):
    """Executions of locked instructions of `binary` in a callgrind `profile`, per function."""
    locked = locked_instructions(binary)
    name = binary.rsplit("/", 1)[-1]
    counts = collections.Counter()
    objects, current, address, call_cost = {}, None, 0, False
    for line in open(profile):
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.strip())
            if m.group(2):
                objects[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                current = objects.get(m.group(1))
            continue
        if line.startswith("calls="):
            # The next cost line is the call's inclusive cost, not its instruction's.
            call_cost = True
            continue
        m = re.match(r"^(0x[0-9a-f]+|\+\d+|-\d+|\*)\s+\S+\s+(\d+)", line)
        if not m:
            continue
        position = m.group(1)
        if position.startswith("0x"):
            address = int(position, 16)
        elif position[0] == "+":
            address += int(position[1:])
        elif position[0] == "-":
            address -= int(position[1:])
        if call_cost:
            call_cost = False
            continue
        if current and current.endswith("/" + name) and address in locked:
            counts[locked[address]] += int(m.group(2))
    return counts
