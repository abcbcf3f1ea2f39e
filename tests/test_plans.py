"""Plans do not move unless a commit says so: every plan's digest against tests/plans.json.

A refactor must leave every kernel and launch byte-identical; a change to code generation that
means to move them regenerates the digests (``python -m tests.plan_snapshot --update``) and says
in its commit which plans changed and why. Planning needs no device: this runs anywhere, in ~15 s.
"""

from __future__ import annotations

import json

from tests.plan_snapshot import GOLDEN, networks, snapshot


def test_every_plan_is_as_recorded():
    recorded = json.loads(GOLDEN.read_text())
    now = snapshot(networks())
    changed = sorted(key for key in recorded.keys() & now.keys() if recorded[key] != now[key])
    missing = sorted(recorded.keys() - now.keys())
    new = sorted(now.keys() - recorded.keys())
    assert not (changed or missing or new), (
        f"{len(changed)} plans changed, {len(missing)} gone, {len(new)} new "
        f"(of {len(recorded)} recorded): changed {changed[:8]}, gone {missing[:8]}, new "
        f"{new[:8]}. If the change is meant (a kernel or planning change), regenerate with "
        "'python -m tests.plan_snapshot --update' and say why in the commit.")
