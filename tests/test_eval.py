"""mimkit.eval: feature extraction, MAE linear probe, DINO weighted k-NN, random-init comparison."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from mimkit.errors import DataError
from mimkit.eval import (LinearProbeHead, ProbeComparison, compare_with_random_init, extract_features, make_protocol,
                         format_comparison_table, knn_accuracy, knn_scores, linear_probe)


# ----------------------------------------------------------------- fixtures
class ItemDataset(torch.utils.data.Dataset):
    """Map-style dataset of {"images", "labels"} dicts (goes through a DataLoader)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"images": self.images[i], "labels": self.labels[i]}


class BatchDataset(ItemDataset):
    """In-memory dataset with get_batch (the fast path)."""

    def __init__(self, images, labels):
        super().__init__(images, labels)
        self.batch_calls = 0

    def get_batch(self, indices):
        self.batch_calls += 1
        return {"images": self.images[indices], "labels": self.labels[indices]}


def class_images(n, num_classes=4, seed=0):
    """(n, 1, 4, 4) images in [0, 1] whose brightest pixel is the class id; labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = 0.3 * torch.rand(n, 1, 4, 4, generator=g)
    images.view(n, -1)[torch.arange(n), labels] += 0.7
    return images, labels


class FakeEncoder(nn.Module):
    """features(images, pool): cls = a fixed projection of the pixels, mean = pixel mean (1-d).
    Records the mode and grad state it ran in."""

    def __init__(self, seed, out_dim=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Parameter(torch.randn(16, out_dim, generator=g))
        self.dropout = nn.Dropout(0.5)
        self.seen = []

    def features(self, images, pool="cls"):
        self.seen.append((self.training, self.dropout.training, torch.is_grad_enabled()))
        x = images.flatten(1)
        if pool == "cls":
            return self.dropout(x @ self.proj)
        if pool == "mean":
            return self.dropout(x.mean(1, keepdim=True))
        raise ValueError(pool)


# ------------------------------------------------------------------- k-NN
def test_knn_hand_computed_weighted_vote_beats_majority():
    # Query along +x. Nearest: one class-0 point at cos 1; two class-1 points at cos 0.5 (+-60 deg);
    # a class-0 point at cos -1 is outside k = 3. Norms differ to check the l2 normalisation.
    c, s = math.cos(math.pi / 3), math.sin(math.pi / 3)
    train = torch.tensor([[2.0, 0.0], [c, s], [3 * c, -3 * s], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[0.5, 0.0]])

    scores = knn_scores(train, labels, query, k=3, temperature=0.07)
    expected = torch.tensor([[math.exp(1 / 0.07), 2 * math.exp(0.5 / 0.07)]])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)
    assert scores.argmax(1).item() == 0  # the one very close neighbour outweighs two far ones

    # A huge temperature makes every weight ~1: plain majority vote, which picks class 1.
    flat = knn_scores(train, labels, query, k=3, temperature=1e4)
    torch.testing.assert_close(flat, torch.tensor([[1.0, 2.0]]), rtol=1e-3, atol=0)
    assert knn_accuracy(train, labels, query, torch.tensor([0]), k=3).top1 == 100.0
    assert knn_accuracy(train, labels, query, torch.tensor([0]), k=3, temperature=1e4).top1 == 0.0
    # k larger than the train set uses all of it (the cos -1 point adds exp(-1/T) to class 0).
    all_scores = knn_scores(train, labels, query, k=20, temperature=0.07)
    assert all_scores[0, 0].item() == pytest.approx(math.exp(1 / 0.07) + math.exp(-1 / 0.07), rel=1e-5)


def numpy_knn_reference(train, train_labels, test, k, t, num_classes):
    """Brute force: full cosine matrix, argsort, weighted bincount per query."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    sim = b @ a.T
    scores = np.zeros((len(test), num_classes))
    for i in range(len(test)):
        nn_idx = np.argsort(-sim[i])[:k]
        scores[i] = np.bincount(train_labels[nn_idx], weights=np.exp(sim[i, nn_idx] / t), minlength=num_classes)
    return scores


@pytest.mark.parametrize("chunk_size", [None, 1, 13, 10_000])
def test_knn_matches_numpy_bruteforce(chunk_size):
    rng = np.random.default_rng(0)
    num_classes = 7
    train = rng.normal(size=(300, 16)).astype(np.float32)
    train_labels = rng.integers(0, num_classes, 300)
    test = rng.normal(size=(97, 16)).astype(np.float32)
    test_labels = rng.integers(0, num_classes, 97)
    ref = numpy_knn_reference(train.astype(np.float64), train_labels, test.astype(np.float64), 20, 0.07, num_classes)

    args = (torch.from_numpy(train), torch.from_numpy(train_labels))
    scores = knn_scores(*args, torch.from_numpy(test), chunk_size=chunk_size, num_classes=num_classes)
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-4)
    result = knn_accuracy(*args, torch.from_numpy(test), torch.from_numpy(test_labels), chunk_size=chunk_size)

    ranked = np.argsort(-ref, axis=1)[:, :5]
    voted = np.take_along_axis(ref, ranked, 1) > 0
    top1 = 100 * np.mean(ranked[:, 0] == test_labels)
    top5 = 100 * np.mean(((ranked == test_labels[:, None]) & voted).any(1))
    assert result.top1 == pytest.approx(top1)
    assert result.top5 == pytest.approx(top5)
    assert 0 < result.top1 < result.top5 < 100  # a non-degenerate case


def test_knn_top5_only_with_five_classes():
    feats, labels = torch.randn(40, 3), torch.arange(40) % 4
    assert knn_accuracy(feats, labels, feats, labels).top5 is None
    assert knn_accuracy(feats, labels, feats, labels, k=1).top1 == 100.0  # each point is its own neighbour


# ------------------------------------------------------------ linear probe
def separable_data(n, dim=32, num_classes=5, seed=0):
    """Labels = argmax of a fixed linear map, keeping only points with a clear margin; features
    are then scaled and shifted per dimension (the BatchNorm must undo that)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, num_classes, generator=g)
    x = torch.randn(4 * n, dim, generator=g)
    logits = x @ w
    top2 = logits.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 1.0
    x, y = x[keep][:n], logits[keep][:n].argmax(1)
    assert len(x) == n
    scale = torch.logspace(-2, 2, dim)
    return x * scale + 5.0, y


def test_linear_probe_separable_reaches_100():
    x, y = separable_data(3000)
    result = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], progress=False)
    assert result.train_top1 >= 99.0
    assert result.test_top1 >= 98.0
    assert not result.head.training
    assert result.head.fc.weight.shape == (5, 32)


def test_linear_probe_random_labels_is_chance_on_test():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 32, generator=g)
    y = torch.randint(0, 10, (4000,), generator=g)
    result = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], progress=False)
    assert 5.0 <= result.test_top1 <= 15.0  # chance is 10%, std ~0.7 points
    assert result.train_top1 > result.test_top1  # it did fit something (noise)


def test_linear_probe_head_is_mae_batchnorm_without_affine():
    head = LinearProbeHead(12, 3)
    bn = head.norm
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.weight is None and bn.bias is None
    assert bn.eps == 1e-6
    assert [name for name, _ in head.named_parameters()] == ["1.weight", "1.bias"]
    assert set(head.state_dict()) == {"0.running_mean", "0.running_var", "0.num_batches_tracked",
                                      "1.weight", "1.bias"}


def test_linear_probe_is_seeded_and_keeps_thread_count():
    x, y = separable_data(300, dim=8, num_classes=3, seed=2)
    threads = torch.get_num_threads()
    a = linear_probe(x[:200], y[:200], x[200:], y[200:], epochs=3, seed=7, progress=False)
    b = linear_probe(x[:200], y[:200], x[200:], y[200:], epochs=3, seed=7, progress=False)
    c = linear_probe(x[:200], y[:200], x[200:], y[200:], epochs=3, seed=8, progress=False)
    assert torch.equal(a.head.fc.weight, b.head.fc.weight)
    assert not torch.equal(a.head.fc.weight, c.head.fc.weight)
    assert torch.get_num_threads() == threads


def test_probe_inputs_are_checked():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(ValueError, match="test features"):
        linear_probe(x, y, torch.randn(5, 3), y[:5], progress=False)
    with pytest.raises(ValueError, match="train labels"):
        knn_accuracy(x, y[:9], x, y)
    with pytest.raises(ValueError, match="integer class ids"):
        knn_accuracy(x, y.float(), x, y)


# -------------------------------------------------------- feature extraction
@pytest.mark.parametrize("dataset_class", [ItemDataset, BatchDataset])
def test_extract_features_preserves_order_and_restores_modes(dataset_class):
    images, labels = class_images(23)
    dataset = dataset_class(images, labels)
    model = FakeEncoder(seed=0)
    model.train()
    model.dropout.eval()  # a submodule deliberately frozen in eval mode must stay so

    feats, out_labels = extract_features(model, dataset, batch_size=5, progress=False)
    torch.testing.assert_close(feats, images.flatten(1) @ model.proj.detach())  # no dropout applied
    assert torch.equal(out_labels, labels) and out_labels.dtype == torch.int64
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert model.seen and all(s == (False, False, False) for s in model.seen)  # eval mode, no grad
    assert model.training and not model.dropout.training
    if dataset_class is BatchDataset:
        assert dataset.batch_calls == 5  # ceil(23 / 5), the get_batch fast path

    mean_feats, _ = extract_features(model, dataset, batch_size=64, pool="mean", progress=False)
    torch.testing.assert_close(mean_feats, images.flatten(1).mean(1, keepdim=True))


def test_extract_features_needs_labels():
    class Unlabelled(ItemDataset):
        def __getitem__(self, i):
            return {"images": self.images[i]}

    images, labels = class_images(4)
    with pytest.raises(DataError, match="labels"):
        extract_features(FakeEncoder(0), Unlabelled(images, labels), progress=False)
    with pytest.raises(DataError, match="empty"):
        extract_features(FakeEncoder(0), ItemDataset(images[:0], labels[:0]), progress=False)


# ------------------------------------------------------ pretrained vs random
def test_compare_with_random_init_rows_and_gains():
    train_set = BatchDataset(*class_images(400, seed=0))
    test_set = ItemDataset(*class_images(200, seed=1))
    pretrained, random_init = FakeEncoder(seed=0, out_dim=16), FakeEncoder(seed=1, out_dim=1)
    linear_kwargs, knn_kwargs = {"epochs": 5}, {"k": 10}

    protocol = make_protocol("probes", linear_kwargs=linear_kwargs, knn_kwargs=knn_kwargs, progress=False)
    rows = compare_with_random_init(pretrained, random_init, protocol, train_set, test_set, method="mae",
                                    pools=("mean", "cls"))
    assert [(r.method, r.pool) for r in rows] == [("mae", "mean"), ("mae", "cls")]

    def expected(model, pool):
        train = extract_features(model, train_set, pool=pool, progress=False)
        test = extract_features(model, test_set, pool=pool, progress=False)
        return (linear_probe(*train, *test, progress=False, **linear_kwargs).test_top1,
                knn_accuracy(*train, *test, **knn_kwargs).top1)

    for row in rows:
        lin_pre, knn_pre = expected(pretrained, row.pool)
        lin_rnd, knn_rnd = expected(random_init, row.pool)
        assert (row.linear_pretrained, row.linear_random) == (lin_pre, lin_rnd)
        assert (row.knn_pretrained, row.knn_random) == (knn_pre, knn_rnd)
        assert row.linear_gain == pytest.approx(lin_pre - lin_rnd)
        assert row.knn_gain == pytest.approx(knn_pre - knn_rnd)
    # "cls": 16-d projection of the pixels (separable) vs a 1-d projection: pretraining "helps".
    assert rows[1].linear_gain > 20 and rows[1].knn_gain > 20
    # "mean" ignores the projection, so both models give identical features: no gain at all.
    assert rows[0].linear_gain == 0 and rows[0].knn_gain == 0


def test_format_comparison_table():
    rows = [ProbeComparison("mae", "cls", 71.234, 60.1, 80.0, 82.5),
            ProbeComparison("mae", "mean", 50.0, 10.0, 40.0, 40.0)]
    lines = format_comparison_table(rows, make_protocol("probes")).splitlines()
    header, body = lines[1], lines[3:]
    assert [c.strip() for c in header.split("|")] == ["method", "pool", "linear pretrained", "linear random",
                                                      "linear gain", "k-NN pretrained", "k-NN random", "k-NN gain"]
    assert [c.strip() for c in body[0].split("|")] == ["mae", "cls", "71.23", "60.10", "+11.13",
                                                       "80.00", "82.50", "-2.50"]
    assert [c.strip() for c in body[1].split("|")][1:] == ["mean", "50.00", "10.00", "+40.00",
                                                           "40.00", "40.00", "+0.00"]
    assert len({len(line) for line in lines[1:3]}) == 1  # header and rule aligned
    assert rows[0].to_dict()["knn_gain"] == pytest.approx(-2.5)
