"""Generation metrics: Fréchet distance (vs scipy), Inception Score, improved precision/recall,
CAS, the pluggable feature network, the metric report, and the small Classifier they rely on."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from mimkit.config import RunConfig, to_dict
from mimkit.engine.checkpoint import save_checkpoint
from mimkit.engine.config import OptimConfig, TrainConfig
from mimkit.errors import CheckpointError, ConfigError, MimkitError
from mimkit.eval.cas import classification_accuracy_score
from mimkit.eval.feature_network import FeatureNetwork
from mimkit.eval.frechet import feature_statistics, frechet_distance
from mimkit.eval.generation_report import format_generation_report, generation_metrics
from mimkit.eval.inception_score import inception_score
from mimkit.eval.precision_recall import knn_radii, precision_recall
from mimkit.methods.classifier import PRESETS, Classifier, ClassifierConfig

TINY = dict(img_size=8, in_chans=1, num_classes=4, widths=(8, 16), dropout=0.0, label_smoothing=0.0)


def tiny_config(**kw) -> ClassifierConfig:
    return ClassifierConfig(**{**TINY, **kw})


def quadrant_images(n, seed=0, noise=0.3):
    """(n, 1, 8, 8) images in [0, 1]: class c (0..3) lights up quadrant c; labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = noise * torch.rand(n, 1, 8, 8, generator=g)
    for c in range(4):
        r, q = divmod(c, 2)
        images[labels == c, :, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 1 - noise
    return images, labels


@pytest.fixture
def classifier_registered():
    """The classifier is a registered method (tests that need it say so)."""
    from mimkit.registry import method_registry

    assert method_registry()["classifier"].model_class is Classifier


# ------------------------------------------------------------- Fréchet distance
def scipy_fid(mu1, sigma1, mu2, sigma2):
    """The reference formula: tr sqrtm(S1 S2) with scipy (real part), as in the FID code."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def test_feature_statistics_match_numpy():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == torch.float64 and sigma.shape == (6, 6)
    np.testing.assert_allclose(mu.numpy(), x.double().numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), atol=1e-12)


@pytest.mark.parametrize("n1, n2", [(200, 200), (40, 50), (20, 30)])  # N < D = 64: singular covariances
def test_frechet_distance_matches_scipy_sqrtm(n1, n2):
    rng = np.random.default_rng(n1)
    d = 64
    a = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(size=(n2, d)) + 0.5
    s1, s2 = feature_statistics(torch.tensor(a)), feature_statistics(torch.tensor(b))
    ours = frechet_distance(*s1, *s2)
    reference = scipy_fid(*(t.numpy() for t in (*s1, *s2)))
    assert abs(ours - reference) < 1e-3
    assert abs(frechet_distance(*s2, *s1) - ours) < 1e-6  # symmetric


@pytest.mark.parametrize("n", [200, 20])
def test_frechet_distance_zero_for_identical_statistics(n):
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mu, sigma = feature_statistics(x)
    assert 0.0 <= frechet_distance(mu, sigma, mu, sigma) < 1e-8 * float(sigma.trace())


def test_frechet_distance_hand_computed_diagonal():
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2, zero variances included
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 1.0, -2.0])
    a, b = torch.tensor([4.0, 1.0, 0.0]), torch.tensor([1.0, 9.0, 0.0])
    expected = 9 + 16 + (2 - 1) ** 2 + (1 - 3) ** 2
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, abs=1e-10)


def test_frechet_inputs_are_checked():
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(torch.randn(1, 4))
    mu, sigma = feature_statistics(torch.randn(10, 4))
    mu3, sigma3 = feature_statistics(torch.randn(10, 3))
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(mu, sigma, mu3, sigma3)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu * math.nan, sigma, mu, sigma)


# --------------------------------------------------------------- Inception Score
def numpy_inception_score(p, splits):
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp((part * (np.log(part) - np.log(py))).sum(1).mean()))
    return np.mean(scores), np.std(scores)


def test_inception_score_hand_computed_cases():
    assert inception_score(torch.full((20, 10), 0.1), splits=2) == pytest.approx((1.0, 0.0), abs=1e-12)
    one_hot = F.one_hot(torch.arange(40) % 8, 8).float()
    assert inception_score(one_hot, splits=5) == pytest.approx((8.0, 0.0), abs=1e-9)  # each split spans 8 classes
    # p1 = (1, 0), p2 = (1/2, 1/2): p(y) = (3/4, 1/4), mean KL = (log 4/3 + log(4/3) / 2) / 2 -> IS = (4/3)^(3/4)
    assert inception_score(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), splits=1)[0] == pytest.approx((4 / 3) ** 0.75)


def test_inception_score_matches_numpy_with_splits():
    p = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=103)
    mean, std = inception_score(torch.tensor(p), splits=4)
    ref_mean, ref_std = numpy_inception_score(p, 4)
    assert mean == pytest.approx(ref_mean, rel=1e-10) and std == pytest.approx(ref_std, rel=1e-8)


def test_inception_score_rejects_logits_and_bad_splits():
    with pytest.raises(ValueError, match="softmax"):
        inception_score(torch.randn(10, 5))
    with pytest.raises(ValueError, match="splits"):
        inception_score(torch.full((3, 2), 0.5), splits=4)


# ------------------------------------------------------------ precision / recall
def test_precision_recall_hand_computed_1d():
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    generated = torch.tensor([[0.5], [5.0], [12.0], [20.0]])
    # k=1 radii: real (1, 1, 2, 4); generated (4.5, 4.5, 7, 8)
    assert knn_radii(real, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(generated, k=1).tolist() == [4.5, 4.5, 7.0, 8.0]
    # 0.5 is in 0's ball, 5 on the boundary of 3's ball (|5 - 3| = 2 = radius), 12 and 20 in none
    # every real point lies within 4.5 of 0.5 or of 5
    result = precision_recall(real, generated, k=1)
    assert (result.precision, result.recall, result.k) == (0.5, 1.0, 1)


def test_precision_recall_identical_and_disjoint_sets():
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    same = precision_recall(x, x.clone(), chunk_size=64)
    assert (same.precision, same.recall) == (1.0, 1.0)
    far = precision_recall(x, x + 1000.0)
    assert (far.precision, far.recall) == (0.0, 0.0)


def test_precision_recall_matches_numpy_bruteforce_any_chunking():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(120, 5, generator=g, dtype=torch.float64)
    generated = 1.3 * torch.randn(90, 5, generator=g, dtype=torch.float64) + 0.4

    def reference(a, b, k=3):
        da = np.linalg.norm(a[:, None] - a[None], axis=-1)
        radii = np.sort(da, axis=1)[:, k]
        dab = np.linalg.norm(b[:, None] - a[None], axis=-1)
        return (dab <= radii[None]).any(1).mean()

    expected = (reference(real.numpy(), generated.numpy()), reference(generated.numpy(), real.numpy()))
    for chunk in (None, 7, 1000):
        result = precision_recall(real, generated, chunk_size=chunk)
        assert (result.precision, result.recall) == pytest.approx(expected, abs=1e-12)
    assert 0.1 < expected[0] < 0.99 and 0.1 < expected[1] < 0.99  # a case that is neither trivial


def test_precision_recall_inputs_are_checked():
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2))
    with pytest.raises(ValueError, match="same feature network"):
        precision_recall(torch.randn(10, 2), torch.randn(10, 3))


# ---------------------------------------------------------------------- Classifier
def test_classifier_forward_loss_accuracy_and_features():
    torch.manual_seed(0)
    model = Classifier(tiny_config(label_smoothing=0.1)).eval()
    images, labels = quadrant_images(12)
    out = model(images, labels)
    logits = model.logits(images)
    assert logits.shape == (12, 4) and model.features(images).shape == (12, 16) == (12, model.feature_dim)
    assert torch.allclose(out.loss, F.cross_entropy(logits, labels, label_smoothing=0.1))
    assert out.logs["accuracy"].item() == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
    assert torch.allclose(model.head(model.features(images, "mean")), logits)
    with pytest.raises(ValueError, match="unlabelled"):
        model(images, torch.full((12,), -1))


def test_classifier_config_is_validated():
    with pytest.raises(ConfigError, match="norm"):
        tiny_config(norm="layer").validate()
    with pytest.raises(ConfigError, match="too small"):
        tiny_config(img_size=8, widths=(8, 8, 8, 8, 8)).validate()
    with pytest.raises(ConfigError, match="groups"):
        tiny_config(norm="group", groups=3).validate()
    Classifier(tiny_config(norm="group", groups=4))(*quadrant_images(4)).loss.backward()


def test_classifier_preset_is_a_valid_run_config(classifier_registered):
    from mimkit.config import run_config_from_dict

    config = run_config_from_dict(PRESETS["classifier_fmnist"])
    assert config.method == "classifier" and config.model.img_size == 28 and config.model.in_chans == 1


def test_classifier_trains_with_the_trainer(tmp_path):
    from mimkit.data import InMemoryDataset
    from mimkit.engine.trainer import Trainer

    images, labels = quadrant_images(64)
    dataset = InMemoryDataset((images * 255).round().to(torch.uint8), labels)
    config = RunConfig(method="classifier", model=tiny_config(),
                       optim=OptimConfig(lr=1e-2, warmup_steps=2),
                       train=TrainConfig(steps=30, batch_size=16, out_dir=str(tmp_path), progress=False, threads=1))
    torch.manual_seed(0)
    logs = Trainer(Classifier(config.model), config, dataset).fit()
    assert logs["accuracy"] > 90 and (tmp_path / "checkpoints" / "latest").is_file()


# ----------------------------------------------------------------------------- CAS
def test_cas_is_high_for_right_labels_and_chance_for_shuffled():
    generated, labels = quadrant_images(512, seed=0)
    real, real_labels = quadrant_images(200, seed=1)
    kwargs = dict(epochs=3, min_steps=0, batch_size=64, lr=1e-2, progress=False, num_threads=1)
    right = classification_accuracy_score(generated, labels, real, real_labels, tiny_config(), **kwargs)
    shuffled = labels[torch.randperm(512, generator=torch.Generator().manual_seed(0))]
    wrong = classification_accuracy_score(generated, shuffled, real, real_labels, tiny_config(), **kwargs)
    assert right.accuracy > 95
    assert wrong.accuracy < 45  # chance is 25%


def test_cas_is_seeded_and_leaves_the_global_rng_alone():
    generated, labels = quadrant_images(64)
    state = torch.get_rng_state()
    runs = [classification_accuracy_score(generated, labels, generated, labels, tiny_config(), epochs=1,
                                          min_steps=6, batch_size=16, progress=False) for _ in range(2)]
    assert torch.equal(state, torch.get_rng_state())
    assert runs[0].epochs == 2  # 4 steps per epoch, raised to reach min_steps=6
    for a, b in zip(runs[0].classifier.state_dict().values(), runs[1].classifier.state_dict().values()):
        assert torch.equal(a, b)


def test_cas_inputs_are_checked():
    images, labels = quadrant_images(8)
    with pytest.raises(ValueError, match="num_classes"):
        classification_accuracy_score(images, labels + 4, images, labels, tiny_config(), progress=False)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        classification_accuracy_score(images.expand(-1, 3, -1, -1), labels, images, labels, tiny_config(),
                                      progress=False)


# ------------------------------------------------------------------ feature network
def test_feature_network_from_classifier_batches_and_restores_mode():
    torch.manual_seed(0)
    model = Classifier(tiny_config(dropout=0.5)).train()
    images, _ = quadrant_images(10)
    net = FeatureNetwork.from_classifier(model, name="tiny", batch_size=3)
    feats, logits = net.features_and_logits(images)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(feats, model.features(images), atol=1e-6)
        assert torch.allclose(net.probabilities(images), model.logits(images).softmax(1), atol=1e-6)
    model.train()
    net.features(images)
    assert model.training and all(m.training for m in model.modules())
    # other sizes are fitted to the network's square input, other channel counts refused
    from mimkit.data.resize import fit_square
    bigger = torch.rand(2, 1, 12, 12)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(net.features(bigger), model.features(fit_square(bigger, 8)), atol=1e-6)
    with pytest.raises(ValueError, match=r"takes images \(N, 1, 8, 8\)"):
        net.features(torch.rand(2, 3, 8, 8))


def test_feature_network_from_checkpoint(tmp_path, classifier_registered):
    torch.manual_seed(0)
    config = tiny_config()
    model = Classifier(config).eval()
    save_checkpoint(tmp_path, 5, model, to_dict(RunConfig(method="classifier", model=config)))
    net = FeatureNetwork.from_checkpoint(tmp_path)
    images, _ = quadrant_images(6)
    with torch.no_grad():
        assert torch.equal(net.features(images), model.features(images))
    assert net.name.startswith("classifier ") and "step_00000005" in net.name


class InceptionLike(nn.Module):
    """Stands in for an exported Inception: features = (min, max, side) of its input, and logits."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 5)

    def pool(self, x):
        side = torch.full_like(x[:, 0, 0, 0], x.shape[-1])
        return torch.stack([x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), side], 1)

    def forward(self, x):
        feats = self.pool(x)
        return feats, self.fc(feats)


class FeaturesOnly(InceptionLike):
    def forward(self, x):
        return self.pool(x)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # deprecated in torch 2.13, still works
def test_feature_network_from_torchscript(tmp_path):
    path = tmp_path / "inception.pt"
    torch.jit.script(InceptionLike()).save(str(path))
    net = FeatureNetwork.from_torchscript(path, input_range=(-1.0, 1.0), batch_size=2)
    images = torch.zeros(3, 1, 8, 8)
    images[:, :, 0, 0] = 1.0
    feats = net.features(images)
    # [0, 1] -> [-1, 1] and resized to 299 (bilinear, antialiased, so the single bright pixel is
    # blurred below 1): the module sees 299 x 299 x 3 inputs starting from -1
    assert feats[:, 0].tolist() == [-1.0] * 3 and (feats[:, 2] == 299).all() and (feats[:, 1] > -1).all()
    assert net.probabilities(images).sum(1).allclose(torch.ones(3))
    assert "inception.pt" in net.name

    torch.jit.script(FeaturesOnly()).save(str(tmp_path / "feats.pt"))
    with pytest.raises(MimkitError, match="no class logits"):
        FeatureNetwork.from_torchscript(tmp_path / "feats.pt").probabilities(images)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # deprecated in torch 2.13, still works
def test_feature_network_torchscript_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        FeatureNetwork.from_torchscript(tmp_path / "missing.pt")
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a TorchScript file"):
        FeatureNetwork.from_torchscript(plain)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a TorchScript file"):
        FeatureNetwork.from_torchscript(junk)


# ----------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def trained_net():
    """A FeatureNetwork around a tiny classifier trained on quadrant images (~100% accurate)."""
    images, labels = quadrant_images(256, seed=5)
    result = classification_accuracy_score(images, labels, images, labels, tiny_config(), epochs=10, min_steps=0,
                                           batch_size=32, lr=1e-2, progress=False, num_threads=1)
    assert result.accuracy == 100
    return FeatureNetwork.from_classifier(result.classifier, name="tiny classifier")


def test_generation_metrics_and_report(trained_net):
    net = trained_net
    real, real_labels = quadrant_images(60, seed=1)
    same = generation_metrics(real.clone(), real, net, real_labels, real_labels, cas_config=tiny_config(), splits=1,
                              cas_kwargs={"epochs": 6, "min_steps": 0, "batch_size": 16, "lr": 1e-2, "num_threads": 1})
    assert same["fid"] < 1e-6 and same["precision"] == same["recall"] == 1.0
    assert same["cas"] > 90 and same["feature_network"] == "tiny classifier"
    # ~97% confident and evenly spread over the 4 classes: near the maximum IS of 4 (exp(ln 4 - H) ~ 3.3)
    assert 3.0 < same["inception_score"][0] <= 4 and (same["num_generated"], same["num_real"]) == (60, 60)

    generated = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    other = generation_metrics(generated, real, net, splits=4)
    feats_g, feats_r = net.features(generated), net.features(real)
    expected = frechet_distance(*feature_statistics(feats_g), *feature_statistics(feats_r))
    assert other["fid"] == pytest.approx(expected) and other["fid"] > 0 and other["cas"] is None
    probs = net.probabilities(generated).double()
    assert other["inception_score"] == pytest.approx(inception_score(probs, splits=4), rel=1e-4, abs=1e-6)

    table = format_generation_report(other)
    assert "tiny classifier" in table and "40 generated vs 60 real" in table
    assert f"{other['fid']:.3f}" in table and "| CAS top-1 (%)" in table and table.count("\n| ") == 6


class PixelFeatures(nn.Module):
    """A features-only model (like an MAE encoder): no logits, so no Inception Score."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def features(self, images, pool="mean"):
        return images.flatten(1) * self.scale


def test_generation_metrics_without_logits_skips_inception_score():
    net = FeatureNetwork.from_classifier(PixelFeatures(), name="pixels")
    real, _ = quadrant_images(30, seed=1)
    generated, _ = quadrant_images(30, seed=2)
    metrics = generation_metrics(generated, real, net)
    assert metrics["inception_score"] is None and metrics["fid"] > 0
    expected = precision_recall(real.flatten(1), generated.flatten(1))
    assert (metrics["precision"], metrics["recall"]) == (expected.precision, expected.recall)
    assert "| Inception Score (mean ± std) |" in format_generation_report(metrics)
    with pytest.raises(MimkitError, match="no class logits"):
        net.probabilities(real)


def test_generation_metrics_inputs_are_checked():
    net = FeatureNetwork.from_classifier(Classifier(tiny_config()))
    images, labels = quadrant_images(8)
    with pytest.raises(ValueError, match="labels_generated"):
        generation_metrics(images, images, net, cas_config=tiny_config())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generation_metrics(images * 2 - 1, images, net)

