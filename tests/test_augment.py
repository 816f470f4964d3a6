"""Augmentations, hashes, identifiers, EOS layout and crop (trm-reference §7.2, §7.3, §8 step 3)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trmlab.data import augment
from trmlab.data.build_arc import NpyStreamWriter, _DedupTable
from trmlab.errors import DataError

FAST = settings(max_examples=60, deadline=None)


@st.composite
def grids(draw, max_side: int = 30, colours: int = 10) -> np.ndarray:
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, colours, size=(h, w)).astype(np.uint8)


@st.composite
def colour_maps(draw) -> np.ndarray:
    perm = draw(st.permutations(list(range(1, 10))))
    return np.array([0, *perm], dtype=np.uint8)


def test_dihedral_ids_follow_numpy_conventions():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    expected = [g, np.rot90(g), np.rot90(g, 2), np.rot90(g, 3), np.fliplr(g), np.flipud(g), g.T,
                np.fliplr(np.rot90(g))]
    for t, want in enumerate(expected):
        np.testing.assert_array_equal(augment.dihedral(g, t), want)
    with pytest.raises(ValueError):
        augment.dihedral(g, 8)


def test_inverse_table_is_the_group_inverse():
    assert augment.DIHEDRAL_INVERSE == (0, 3, 2, 1, 4, 5, 6, 7)
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for t in range(8):
        undone = augment.dihedral(augment.dihedral(g, t), augment.DIHEDRAL_INVERSE[t])
        np.testing.assert_array_equal(undone, g)


@FAST
@given(grid=grids(), t=st.integers(0, 7), colour_map=colour_maps())
def test_every_augmentation_inverts_exactly(grid, t, colour_map):
    augmented = augment.apply_augmentation(grid, t, colour_map)
    assert augmented.flags.c_contiguous and augmented.dtype == np.uint8
    np.testing.assert_array_equal(augment.inverse_augmentation(augmented, t, colour_map), grid)
    np.testing.assert_array_equal(augment.inverse_dihedral(augment.dihedral(grid, t), t), grid)
    inverse = augment.inverse_colour_map(colour_map)
    np.testing.assert_array_equal(inverse[colour_map], np.arange(10))
    assert inverse[0] == 0


@FAST
@given(t=st.integers(0, 7), colour_map=colour_maps(),
       task_id=st.text("0123456789abcdef", min_size=1, max_size=12))
def test_identifier_names_round_trip(t, colour_map, task_id):
    name = augment.augmentation_name(task_id, t, colour_map)
    assert name == f"{task_id}|||t{t}|||{''.join(map(str, colour_map))}"
    parsed_id, parsed_t, parsed_map = augment.parse_identifier(name)
    assert (parsed_id, parsed_t) == (task_id, t)
    np.testing.assert_array_equal(parsed_map, colour_map)


def test_parse_identifier_bare_id_and_malformed():
    task_id, t, colour_map = augment.parse_identifier("007bbfb7")
    assert (task_id, t) == ("007bbfb7", 0)
    np.testing.assert_array_equal(colour_map, np.arange(10))
    assert augment.parse_identifier("007bbfb7|||t4|||0481963275")[1] == 4
    for bad in ("a|||t8|||0123456789", "a|||t1|||1023456789", "a|||t1|||012345678", "a|||x1|||0123456789",
                "a|||t1|||0123456789|||x", "a|||t1|||0113456789"):
        with pytest.raises(DataError, match="malformed"):
            augment.parse_identifier(bad)


@FAST
@given(grid=grids())
def test_grid_hash_is_the_official_formula(grid):
    expected = hashlib.sha256(bytes([grid.shape[0], grid.shape[1]]) + grid.tobytes()).hexdigest()
    assert augment.grid_hash(grid) == expected
    assert augment.grid_hash(np.asfortranarray(grid)) == expected  # C order whatever the input layout


def test_grid_hash_distinguishes_shapes_with_equal_cells():
    g = np.arange(6, dtype=np.uint8)
    assert augment.grid_hash(g.reshape(2, 3)) != augment.grid_hash(g.reshape(3, 2))


@FAST
@given(data=st.data(), canvas=st.integers(1, 32))
def test_eos_layout_matches_the_spec(data, canvas):
    h = data.draw(st.integers(1, canvas))
    w = data.draw(st.integers(1, canvas))
    r0 = data.draw(st.integers(0, canvas - h))
    c0 = data.draw(st.integers(0, canvas - w))
    grid = np.random.default_rng(h * 131 + w).integers(0, 10, size=(h, w)).astype(np.uint8)
    board = augment.encode_grid(grid, r0, c0, canvas).reshape(canvas, canvas)
    for r in range(canvas):
        for c in range(canvas):
            inside_rows, inside_cols = r0 <= r < r0 + h, c0 <= c < c0 + w
            if inside_rows and inside_cols:
                want = grid[r - r0, c - c0] + 2
            elif r == r0 + h and inside_cols:
                want = 1  # EOS row below (absent at the bottom edge: r would be off-canvas)
            elif c == c0 + w and inside_rows:
                want = 1  # EOS column to the right
            else:
                want = 0  # PAD, including the corner (r0 + h, c0 + w)
            assert board[r, c] == want, (r, c)


@FAST
@given(grid=grids(), canvas=st.sampled_from([30, 31]))
def test_crop_recovers_a_grid_at_the_origin(grid, canvas):
    tokens = augment.encode_grid(grid, 0, 0, canvas)
    np.testing.assert_array_equal(augment.crop_grid(tokens, canvas), grid)


def test_crop_rule_running_width_and_empty():
    canvas = 5
    board = np.zeros((canvas, canvas), dtype=np.int64)
    board[0, :4] = 3   # row 1: width 4 → area 4
    board[1, :2] = 3   # row 2: width 2 → area 4 (not strictly larger: keep 1x4)
    board[2, :3] = 3   # row 3: width stays 2 (running minimum) → area 6
    crop = augment.crop_grid(board.reshape(-1), canvas)
    assert crop.shape == (3, 2) and (crop == 1).all()
    assert augment.crop_grid(np.zeros(canvas * canvas, np.int64), canvas).shape == (0, 0)


def _literal_key(pairs, t, colour_map):
    return augment.puzzle_hash([(augment.apply_augmentation(i, t, colour_map),
                                 augment.apply_augmentation(o, t, colour_map)) for i, o in pairs])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_dedup_key_equals_official_puzzle_hash_equivalence(data):
    # Few colours and tiny symmetric-prone grids make equal augmentations common.
    n_pairs = data.draw(st.integers(1, 3))
    pairs = [(data.draw(grids(max_side=3, colours=2)), data.draw(grids(max_side=3, colours=2)))
             for _ in range(n_pairs)]
    if data.draw(st.booleans()):
        pairs.append(pairs[0])  # duplicated pair: the multiset matters, not the set
    table = _DedupTable(pairs)
    trials = [(data.draw(st.integers(0, 7)), data.draw(colour_maps())) for _ in range(8)]
    trials.append((0, np.arange(10, dtype=np.uint8)))
    for t1, m1 in trials:
        for t2, m2 in trials:
            same_key = table.key(t1, m1) == table.key(t2, m2)
            same_hash = _literal_key(pairs, t1, m1) == _literal_key(pairs, t2, m2)
            assert same_key == same_hash


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (7, 900)), (np.int32, (13,)), (np.uint8, (0, 16)),
                                         (np.int32, (100001,))])
def test_npy_stream_writer_equals_np_save(tmp_path, dtype, shape):
    array = (np.arange(int(np.prod(shape))) % 251).astype(dtype).reshape(shape)
    writer = NpyStreamWriter(tmp_path / "a.npy", dtype, shape)
    for start in range(0, max(shape[0], 1), 5):
        writer.write(array[start:start + 5])
    writer.close()
    expected = io.BytesIO()
    np.save(expected, array)
    assert (tmp_path / "a.npy").read_bytes() == expected.getvalue()


def test_npy_stream_writer_rejects_short_files(tmp_path):
    writer = NpyStreamWriter(tmp_path / "a.npy", np.int32, (3,))
    writer.write(np.zeros(2))
    with pytest.raises(RuntimeError, match="wrote 2 rows"):
        writer.close()


def _reference_augment(rs: np.random.RandomState, pairs, num_aug: int):
    """trm-reference §7.3 step 5 literally: numpy's legacy RNG, apply every map, official puzzle_hash."""
    seen = {augment.puzzle_hash(pairs)}
    transforms, maps = [0], [list(range(10))]
    for _ in range(5 * num_aug):
        t = rs.randint(0, 8)
        colour_map = np.concatenate(([0], rs.permutation(np.arange(1, 10, dtype=np.uint8)))).astype(np.uint8)
        digest = augment.puzzle_hash([(augment.apply_augmentation(i, t, colour_map),
                                       augment.apply_augmentation(o, t, colour_map)) for i, o in pairs])
        if digest not in seen:
            seen.add(digest)
            transforms.append(t)
            maps.append(colour_map.tolist())
        if len(transforms) >= num_aug + 1:
            break
    return transforms, maps


@settings(max_examples=30, deadline=None)
@given(data=st.data(), colours=st.integers(1, 4), num_aug=st.integers(0, 40), seed=st.integers(0, 1000))
def test_augment_task_equals_the_literal_algorithm(data, colours, num_aug, seed):
    from trmlab.data.build_arc import augment_task
    from trmlab.data.legacy_rng import LegacyDraws

    pairs = [(data.draw(grids(max_side=3, colours=colours)), data.draw(grids(max_side=3, colours=colours)))
             for _ in range(data.draw(st.integers(1, 3)))]
    ours = LegacyDraws(seed)
    transforms, maps = augment_task(ours, pairs, num_aug)
    reference = np.random.RandomState(seed)
    want_transforms, want_maps = _reference_augment(reference, pairs, num_aug)
    assert transforms.tolist() == want_transforms and maps.tolist() == want_maps
    assert ours.randint(2**31) == reference.randint(0, 2**31)  # the same number of draws was consumed
