"""The collectives of a compiled program, and which of them may run in
either order.

XLA:CPU runs the devices of one process on a shared thread pool and each
collective waits at a rendezvous for every device. If a program holds two
collectives neither of which depends on the other, the devices may reach
them in different orders, each waiting at the other one: a deadlock, which
XLA ends with "Termination timeout for all reduce/all gather". A program
with no collective cannot do that, and on one device XLA emits none: that
is why the CPU default is one device (docs/architecture.md).
`find` lists the collectives of compiled HLO text
(`jax.jit(f).lower(...).compile().as_text()`); `unordered` the pairs that
do not form one chain of data dependencies (tests/collectives_test.py
finds no collective in any step of the pipeline on one device).
"""

import re
from typing import Dict, List, Set, Tuple


KINDS = ("all-reduce", "all-gather", "all-to-all", "collective-permute",
         "reduce-scatter", "collective-broadcast")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"(?:^|[\s}\]])([a-z][a-z0-9\-]*)\(")
_OPERAND = re.compile(r"%([\w.\-]+)")


def find(hlo: str) -> List[str]:
  """The kind (KINDS) of every collective instruction of compiled HLO text,
  in order (an async pair counts once, by its -start)."""
  found = []
  for lines in _computations(hlo).values():
    for line in lines:
      parsed = _parse(line)
      op = parsed[1].removesuffix("-start") if parsed else ""
      if op in KINDS:
        found.append(op)
  return found


def _computations(hlo: str) -> Dict[str, List[str]]:
  """Instruction lines of each computation, by name."""
  comps, current = {}, None
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      name = line.split("(")[0].split()[-1].lstrip("%")
      current = comps.setdefault(name, [])
    elif line.startswith("}"):
      current = None
    elif current is not None:
      current.append(line)
  return comps


def _parse(line: str):
  """(name, opcode, operand names) of an instruction line, or None."""
  found = _INSTRUCTION.match(line)
  if not found:
    return None
  name, rest = found.groups()
  rest = rest.split(", metadata=")[0]
  op = _OPCODE.search(rest)
  if not op:
    return None
  return name, op.group(1), _OPERAND.findall(rest[op.end():])


def unordered(hlo: str) -> List[Tuple[str, str, str]]:
  """(computation, collective, collective) for every pair of collectives of
  one computation where neither depends on the other. Empty: the
  collectives of each computation form a chain. (An async pair counts
  once, by its -start.)"""
  pairs = []
  for comp, lines in _computations(hlo).items():
    deps: Dict[str, List[str]] = {}
    collectives = []
    for line in lines:
      parsed = _parse(line)
      if parsed is None:
        continue
      name, op, operands = parsed
      deps[name] = operands
      if op.endswith("-done"):
        continue
      if any(op == k or op == k + "-start" for k in KINDS):
        collectives.append(name)
    if len(collectives) < 2:
      continue
    is_collective = set(collectives)
    upstream: Dict[str, Set[str]] = {}  # the collectives each one needs
    for name in deps:  # HLO text lists operands before their users
      seen: Set[str] = set()
      for operand in deps[name]:
        if operand in upstream:
          seen |= upstream[operand]
          if operand in is_collective:
            seen.add(operand)
      upstream[name] = seen
    for i, a in enumerate(collectives):
      for b in collectives[i + 1:]:
        if a not in upstream[b] and b not in upstream[a]:
          pairs.append((comp, a, b))
  return pairs
