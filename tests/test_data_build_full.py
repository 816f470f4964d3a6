"""Full official builds: the exact identifier and example counts of trm-reference §7.4.

``count_only`` runs the whole random stream that decides identifiers (loading, shuffles, every augmentation
trial) without writing the arrays; the counts equal the released embedding tables' row counts. The full
ARC-AGI-1 write (~7 GB) was also checked by hand: ``trmlab data build-arc --input-file-prefix
../shared/data/arc-kaggle-combined/arc-agi --output-dir /tmp/arc1`` (see benchmarks/README.md).
ARC-AGI-1 counts in ~6 s of CPU and runs in the default suite; ARC-AGI-2 is marked slow.
"""

from __future__ import annotations

import pytest

from trmlab.data.build_arc import BuildOptions, build_arc


@pytest.mark.parametrize("subsets,test_set,identifiers,train,test", [
    pytest.param(["training", "evaluation", "concept"], "evaluation", 876_406,
                 (960, 876_405, 3_633_410), (400, 368_150, 385_815), id="arc-agi-1"),
    pytest.param(["training2", "evaluation2", "concept"], "evaluation2", 1_191_730,
                 (1_280, 1_191_729, 5_163_277), (120, 118_766, 170_393), id="arc-agi-2",
                 marks=pytest.mark.slow),
])
def test_official_counts(arc_kaggle_combined, tmp_path, subsets, test_set, identifiers, train, test):
    summary = build_arc(BuildOptions(output_dir=str(tmp_path / "unused"), count_only=True,
                                     input_file_prefix=str(arc_kaggle_combined / "arc-agi"), subsets=subsets,
                                     test_set_name=test_set, num_aug=1000, seed=42), log=lambda _m: None)
    assert summary.num_identifiers == identifiers
    counts = summary.splits
    assert (counts["train"].groups, counts["train"].puzzles, counts["train"].examples) == train
    assert (counts["test"].groups, counts["test"].puzzles, counts["test"].examples) == test
    assert not (tmp_path / "unused").exists()
