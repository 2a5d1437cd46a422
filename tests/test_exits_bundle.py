"""ExitBundle: a trained network's per-exit logits and measured costs on file, float16 and compressed."""
import json

import numpy as np
import pytest
import torch

from course_utils import exits
from course_utils.errors import CheckpointError, CourseError

E, C = 4, 10


def make_bundle(n_val: int = 600, n_test: int = 900, seed: int = 0) -> exits.ExitBundle:
    g = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in (("val", n_val), ("test", n_test)):
        labels = torch.randint(0, C, (n,), generator=g)
        # later exits are sharper and more often right: a real network's shape, not noise
        logits = torch.randn(E, n, C, generator=g)
        for k in range(E):
            logits[k, torch.arange(n), labels] += 1.0 + k
        splits[split] = exits.ExitScores.from_logits(logits, labels)
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
    return exits.ExitBundle.from_scores(
        splits, exits.ExitCosts([100, 200, 300, 400], [10, 10, 10, 5]), exit_ms={1: [0.1, 0.3, 0.6, 1.0],
                                                                             256: [0.01, 0.03, 0.05, 0.08]},
        device="cpu (test, 1 threads)", meta={"backbone": "mobilenet_v1", "tier": "test"},
        images=images, image_index=torch.arange(32) * 3)


def test_round_trip_keeps_float16_logits_labels_costs_latency_images_and_meta(tmp_path):
    bundle = make_bundle()
    path = exits.save_bundle(bundle, tmp_path / "logits.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["logits.npz"]  # no temporary file left behind
    back = exits.load_bundle(path)
    assert back.splits == ["val", "test"] and back.num_exits == E
    for split in ("val", "test"):
        assert torch.equal(back.logits[split], bundle.logits[split].half().float())
        assert torch.equal(back.labels[split], bundle.labels[split])
    assert back.costs == bundle.costs and back.exit_ms == bundle.exit_ms
    assert back.device == bundle.device and back.meta == bundle.meta
    assert torch.equal(back.images, bundle.images) and torch.equal(back.image_index, bundle.image_index)


def test_sweeps_on_the_stored_logits_match_float32_to_the_sample_except_ties(tmp_path):
    bundle = make_bundle()
    back = exits.load_bundle(exits.save_bundle(bundle, tmp_path / "b.npz"))
    policy = exits.make_policy("max_softmax", 0.7)
    ref = exits.sweep(bundle.scores("val"), bundle.costs, policy)
    got = exits.sweep(back.scores("val"), back.costs, policy)
    # float16 moves a confidence by < 1e-3: only samples within that of the threshold may leave elsewhere
    near = (bundle.scores("val").confidence - 0.7).abs().min(0).values < 1e-3
    assert ((ref.exit_index != got.exit_index) & ~near).sum() == 0
    assert abs(ref.accuracy - got.accuracy) <= near.float().mean().item() + 1e-12


def test_the_file_is_smaller_than_the_float32_logits(tmp_path):
    bundle = make_bundle(5000, 10000)
    path = exits.save_bundle(bundle, tmp_path / "b.npz")
    float32_bytes = 4 * E * 15000 * C
    assert path.stat().st_size < 0.55 * float32_bytes


def test_missing_corrupt_truncated_and_foreign_files_raise_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no exit-logits bundle at .*--tier standard"):
        exits.load_bundle(tmp_path / "absent.npz")
    path = exits.save_bundle(make_bundle(), tmp_path / "b.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated.*git checkout"):
        exits.load_bundle(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        exits.load_bundle(tmp_path / "junk.npz")
    header = np.frombuffer(json.dumps({"format": "someone-else/3"}).encode(), dtype=np.uint8)
    np.savez(tmp_path / "foreign.npz", header=header)
    with pytest.raises(CheckpointError, match="is not an exit-logits bundle .*someone-else/3"):
        exits.load_bundle(tmp_path / "foreign.npz")


def test_inconsistent_shapes_are_refused_with_the_mismatch_named():
    good = make_bundle()
    with pytest.raises(CourseError, match=r"val logits must be \(E=4, N=600, C\)"):
        exits.ExitBundle(logits={"val": good.logits["val"][:3]}, labels={"val": good.labels["val"]}, costs=good.costs)
    with pytest.raises(CourseError, match=r"exit_ms\[1\] has 2 values for 4 exits"):
        exits.ExitBundle(logits=good.logits, labels=good.labels, costs=good.costs, exit_ms={1: [0.1, 0.2]})
    with pytest.raises(CourseError, match="images and image_index come together"):
        exits.ExitBundle(logits=good.logits, labels=good.labels, costs=good.costs, images=good.images)
    plain = exits.ExitScores(*(getattr(good.scores("val"), f) for f in ("predictions", "confidence", "entropy",
                                                                        "labels")))
    with pytest.raises(CourseError, match="hold no logits"):
        exits.ExitBundle.from_scores({"val": plain}, good.costs)
    with pytest.raises(CourseError, match="no 'train' split; it has: val, test"):
        good.scores("train")


def _run_folder(results, name: str, tier: str | None, bundle: exits.ExitBundle) -> None:
    folder = results / "runs" / "edcnn" / name
    folder.mkdir(parents=True)
    if tier is not None:
        (folder / "record.json").write_text(json.dumps({"tier": tier, "status": "ok"}))
    exits.save_bundle(bundle, folder / "edcnn_logits.npz")


def test_load_trained_takes_a_trained_tiers_bundle_and_never_a_demonstration_unasked(tmp_path):
    from course_utils import edcnn

    with pytest.raises(CheckpointError, match=r"no paper or standard-tier edCNN bundle .*--tier standard"):
        edcnn.trained_bundle_path(tmp_path)
    _run_folder(tmp_path, "quick-run", "quick", make_bundle(seed=1))
    with pytest.raises(CheckpointError, match=r"there are quick-tier ones: load_trained\(tiers=\['quick'\]\)"):
        edcnn.trained_bundle_path(tmp_path)
    assert edcnn.trained_bundle_path(tmp_path, tiers=["quick"]).parent.name == "quick-run"
    _run_folder(tmp_path, "standard-run", "standard", make_bundle(seed=2))
    assert edcnn.trained_bundle_path(tmp_path).parent.name == "standard-run"
    _run_folder(tmp_path, "paper-run", "paper", make_bundle(seed=3))
    assert edcnn.trained_bundle_path(tmp_path).parent.name == "paper-run"  # the paper's scale first
    loaded = edcnn.load_trained(tmp_path / "runs" / "edcnn" / "standard-run" / "edcnn_logits.npz")
    assert torch.equal(loaded.logits["val"], make_bundle(seed=2).logits["val"].half().float())


def test_make_bundle_keeps_calibrated_thresholds_and_a_random_thumbnail_subset():
    from course_utils import edcnn
    from course_utils.edcnn import LatencyModel

    b = make_bundle()
    latency = LatencyModel([0.5, 0.4, 0.3, 0.2], [0.1, 0.1, 0.2, 0.2], "cpu (test)")
    images = torch.randint(0, 256, (600, 3, 8, 8), dtype=torch.uint8)
    bundle = edcnn.make_bundle(b.scores("val"), b.scores("test"), b.costs, latency, images=images, thumbnails=40,
                               thresholds={"max_softmax": [0.8, None, 0.9], "entropy": [None, 0.2, 0.3]},
                               meta={"title": "t"})
    assert bundle.meta == {"title": "t", "thresholds": {"max_softmax": [0.8, 1.0, 0.9], "entropy": [0.0, 0.2, 0.3]}}
    assert bundle.exit_ms == {1: latency.exit_ms(1), 256: latency.exit_ms(256)} and bundle.device == "cpu (test)"
    idx = bundle.image_index
    assert len(idx) == 40 and idx.tolist() == sorted(idx.tolist()) and idx.tolist() != list(range(40))
    assert torch.equal(bundle.images, images[idx])


def test_a_standard_tier_bundle_fits_the_repositorys_2_mib_limit(tmp_path):
    """The size the standard tier commits: 6 exits over 5,000 val and 10,000 test samples, CIFAR-sized thumbnails.
    Random logits compress worse than a trained network's, so the real file is at most this large."""
    from course_utils import edcnn
    from course_utils.edcnn import LatencyModel

    g = torch.Generator().manual_seed(0)
    scores = {}
    for split, n in (("val", 5000), ("test", 10000)):
        labels = torch.randint(0, 10, (n,), generator=g)
        scores[split] = exits.ExitScores.from_logits(3 * torch.randn(6, n, 10, generator=g), labels)
    images = torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8, generator=g)
    latency = LatencyModel([0.5] * 6, [0.1] * 6, "cpu (test)")
    bundle = edcnn.make_bundle(scores["val"], scores["test"], exits.ExitCosts([10] * 6, [1] * 6), latency,
                               images=images, thresholds={"max_softmax": [0.9] * 5})
    assert len(bundle.image_index) == edcnn.trained.THUMBNAILS == 96
    size = exits.save_bundle(bundle, tmp_path / "b.npz").stat().st_size
    assert size < 2 * 2 ** 20, f"{size / 2 ** 20:.2f} MiB"
