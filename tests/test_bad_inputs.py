"""Every malformed input of the catalog (tests/bad_inputs.py) is refused with one line naming the
file, line or option, exit status 2 and nothing written; or, where the input is no error, accepted
with the note the case expects."""

from pathlib import Path

import pytest

from tests.bad_inputs import CASES, Workspace, run_case


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: str) -> Workspace:
    """Shared by the cases: good data and the models trained on it (each trained once)."""
    return Workspace(tmp_path_factory.mktemp("bad-inputs"), tiny_encoder)


def test_catalog_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_reaches_its_expected_outcome(case, workspace: Workspace, tmp_path: Path):
    outcome = run_case(case, workspace, tmp_path / case.id)
    if not outcome.as_expected:
        pytest.fail(outcome.describe(), pytrace=False)
