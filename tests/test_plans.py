"""Plans do not move unless a commit says so: every plan's digest against tests/plans.json.

A refactor must leave every kernel and launch byte-identical; a change to code generation that
means to move them regenerates the digests (``python -m tests.plan_snapshot --update``) and says
in its commit which plans changed and why. Networks are keyed by their content, so a new op's
cases or an edited spec are simply not recorded yet (regenerate to record them), never a
failure; only a recorded network planned differently fails. No device needed; ~10 s.
"""

from __future__ import annotations

import json

from tests.plan_snapshot import GOLDEN, networks, snapshot


def test_every_plan_is_as_recorded():
    recorded = json.loads(GOLDEN.read_text())
    now = snapshot(networks())
    compared = recorded.keys() & now.keys()
    assert len(compared) >= len(recorded) // 2, (
        f"only {len(compared)} of {len(recorded)} recorded plans are still planned: the networks "
        "changed wholesale; regenerate with 'python -m tests.plan_snapshot --update'.")
    changed = sorted(key for key in compared if recorded[key] != now[key])
    assert not changed, (
        f"{len(changed)} of {len(compared)} plans changed: {changed[:8]}. If the change is meant "
        "(a kernel or planning change), regenerate with 'python -m tests.plan_snapshot "
        "--update' and say why in the commit.")
