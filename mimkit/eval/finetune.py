"""End-to-end fine-tuning of a pretrained encoder for classification: the MAE / BEiT recipe.

logits = head(fc_norm(model.features(images, pool))) with fc_norm a LayerNorm and head a Linear
(trunc-normal std 2e-5, zero bias, as MAE). Trained with AdamW (betas 0.9, 0.999, weight decay
0.05 except on 1-d parameters, biases, tokens and positions), per-step linear warmup + half-cosine
schedule, layer-wise lr decay, label smoothing 0.1, optional mixup / cutmix (mimkit.eval.mixup)
and stochastic depth, batch augmentation = random horizontal flips.

Layer-wise lr decay (BEiT's get_layer_id_for_vit): parameter group lr = lr * d^(L + 1 - layer_id)
with L the number of layers and
    layer_id 0      cls_token, pos_embed, patch_embed.*, mask_token(s), dist_token, embed.* (the
                    token embedding of MaskGIT / MAGE);
    layer_id i + 1  blocks.i.* (i-th transformer block);
    layer_id L + 1  everything else: the final norm, fc_norm, head, BEiT's shared rel_pos_bias.
RevColV2 has no `blocks`: a whole column is one layer, encoder.columns.i -> i + 1 and (when the
features are read from the decoder, the default) decoder.columns.j -> E + j + 1 with E encoder
columns, so L = E + D. This is mimkit's choice (RevColV2's fine-tuning code was never released).

Which parameters are optimised: only those that receive a gradient from `features` (found by one
autograd pass on two training images), so the decoder-only parts of the pretraining model (MAE's
decoder_*, BEiT's lm_head and cls_pt_layers, MAGE's decoder, RevColV2's decoder_pred) are left out
without naming them, and a frozen tokenizer (requires_grad False) stays frozen. A model whose
`features` runs under torch.no_grad cannot be fine-tuned: MimkitError naming it.

Partial fine-tuning (MAE Fig. 9), trainable_blocks = N: only layers with layer_id >= L + 1 - N (the
last N blocks, the final norm and other top-level parameters) plus fc_norm and head train; N = 0
trains fc_norm and head only; N = L is full fine-tuning. Fully frozen sub-modules run in eval mode.

The model passed in is never modified: fine-tuning works on a copy (rebuilt with
config.drop_path when drop_path is given).
"""
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.collate import collate_readable
from ..data.device_batch import to_device_float
from ..engine.optim import param_groups, scaled_lr, warmup_cosine
from ..errors import ConfigError, DataError, MimkitError
from ..nn.device import model_device
from .comparison import ProbeProtocol
from .features import _check_batch, labelled_batches
from .mixup import Mixup, soft_cross_entropy

EMBEDDING_NAMES = ("cls_token", "pos_embed", "patch_embed", "mask_token", "mask_tokens", "dist_token", "embed")


class FineTuneClassifier(nn.Module):
    """A pretrained model with `features(images, pool) -> (N, D)` and a linear classifier on top.

    images (N, C, H, W) in [0, 1] -> logits (N, num_classes) = head(fc_norm(features)).
    Parameter names: model.*, fc_norm.*, head.* (MAE's fc_norm / head).
    """

    def __init__(self, model: nn.Module, num_classes: int, pool: str = "mean", dim: int | None = None,
                 norm_eps: float = 1e-6):
        super().__init__()
        dim = dim or getattr(model, "feature_dim", None) or getattr(getattr(model, "config", None), "embed_dim", None)
        if not dim:
            raise MimkitError(f"cannot tell the feature width of {type(model).__name__}; pass dim=")
        self.model, self.pool = model, pool
        self.fc_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (N, D) -> logits (N, num_classes)."""
        return self.head(self.fc_norm(feats))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.model.features(images, self.pool))

    def no_weight_decay(self) -> set[str]:
        """The wrapped model's own no-decay names (e.g. MaskGIT's embed.pos_embed), prefixed."""
        hook = getattr(self.model, "no_weight_decay", None)
        return {f"model.{name}" for name in hook()} if callable(hook) else set()


# ------------------------------------------------------------------ layer ids
def layer_stacks(model: nn.Module) -> list[tuple[str, int]]:
    """The (name prefix, length) of the model's sequences of layers, in the order data flows:
    [("blocks", depth)] for a ViT, RevColV2's encoder (and decoder) columns. MimkitError otherwise."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return [("blocks", len(blocks))]
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if isinstance(getattr(encoder, "columns", None), nn.ModuleList):
        stacks = [("encoder.columns", len(encoder.columns))]
        if getattr(model.config, "features_from", "decoder") == "decoder":
            stacks.append(("decoder.columns", len(decoder.columns)))
        return stacks
    raise MimkitError(f"{type(model).__name__} has neither `blocks` nor reversible columns: mimkit cannot tell "
                      f"its layers for layer-wise lr decay or partial fine-tuning")


def num_layers(model: nn.Module) -> int:
    """L: the number of blocks (or RevColV2 columns) the features pass through."""
    return sum(length for _, length in layer_stacks(model))


def layer_id(name: str, stacks: list[tuple[str, int]]) -> int:
    """A parameter name of the wrapped model (no `model.` prefix) -> its layer id in 0..L+1."""
    if name.split(".")[0] in EMBEDDING_NAMES:
        return 0
    offset = 0
    for prefix, length in stacks:
        if name.startswith(prefix + "."):
            return offset + int(name[len(prefix) + 1:].split(".")[0]) + 1
        offset += length
    return offset + 1


def classifier_layer_ids(classifier: FineTuneClassifier) -> dict[str, int]:
    """Every parameter name of the classifier -> its layer id (fc_norm, head: L + 1)."""
    stacks = layer_stacks(classifier.model)
    top = sum(length for _, length in stacks) + 1
    return {name: layer_id(name[len("model."):], stacks) if name.startswith("model.") else top
            for name, _ in classifier.named_parameters()}


def layer_decay_groups(classifier: FineTuneClassifier, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups of the parameters with requires_grad, one per (layer id, decayed or not), each
    with `lr_scale` = layer_decay ** (L + 1 - layer_id), `layer_id` and the parameter `names`.
    Which parameters skip weight decay is mimkit.engine.optim.param_groups' rule."""
    ids = classifier_layer_ids(classifier)
    top = max(ids.values())
    undecayed = {id(p) for p in param_groups(classifier, weight_decay)[1]["params"]}
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in classifier.named_parameters():
        if not param.requires_grad:
            continue
        decay = id(param) not in undecayed
        group = groups.setdefault((ids[name], decay), {
            "params": [], "names": [], "layer_id": ids[name], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": layer_decay ** (top - ids[name])})
        group["params"].append(param)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's lr = lr * its lr_scale (1 when it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# ------------------------------------------------------------ what trains
def used_parameters(classifier: FineTuneClassifier, images: torch.Tensor) -> set[str]:
    """Names of the parameters (with requires_grad) that receive a gradient from one forward pass of
    `images` (B, C, H, W) in eval mode. MimkitError when the model's features carry no gradient."""
    named = [(n, p) for n, p in classifier.named_parameters() if p.requires_grad]
    flags = [(m, m.training) for m in classifier.modules()]
    classifier.eval()
    try:
        with torch.enable_grad():
            feats = classifier.model.features(images, classifier.pool)
            if feats.grad_fn is None:
                cls = type(classifier.model)
                raise MimkitError(f"{cls.__name__}.features(images, pool) returns no gradient (it runs under "
                                  f"torch.no_grad), so its encoder cannot be fine-tuned; remove the torch.no_grad "
                                  f"of {cls.__name__}.features in {cls.__module__}")
            grads = torch.autograd.grad(classifier.classify(feats).sum(), [p for _, p in named], allow_unused=True)
    finally:
        for module, training in flags:
            module.training = training
    return {name for (name, _), grad in zip(named, grads) if grad is not None}


def select_trainable(classifier: FineTuneClassifier, used: set[str], trainable_blocks: int | None) -> list[str]:
    """Set requires_grad: True for the used parameters the partial fine-tuning rule keeps (see the
    module docstring), False for all others. Returns the trainable names."""
    ids = classifier_layer_ids(classifier)
    depth = max(ids.values()) - 1
    if trainable_blocks is not None and not 0 <= trainable_blocks <= depth:
        raise ConfigError(f"trainable_blocks must be between 0 and the model's {depth} layers "
                          f"(None = all), got {trainable_blocks}")
    names = []
    for name, param in classifier.named_parameters():
        own = not name.startswith("model.")
        if trainable_blocks is None or trainable_blocks == depth:
            keep = name in used
        elif trainable_blocks == 0:
            keep = own
        else:
            keep = name in used and ids[name] >= depth + 1 - trainable_blocks
        keep = keep or own
        param.requires_grad_(keep)
        if keep:
            names.append(name)
    return names


def train_mode(classifier: nn.Module) -> None:
    """Train mode, except sub-modules whose parameters are all frozen (eval: no dropout / drop path)."""
    classifier.train()
    for module in classifier.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def prepare_model(model: nn.Module, drop_path: float | None, device) -> nn.Module:
    """A copy of `model` on `device`; with drop_path given, rebuilt from its config with
    config.drop_path = drop_path and the same weights (ConfigError if the config has no drop_path)."""
    config = getattr(model, "config", None)
    if drop_path is not None and not (config is not None and hasattr(config, "drop_path")):
        if drop_path > 0:
            raise ConfigError(f"{type(model).__name__} has no drop_path in its config: fine-tune it without "
                              f"stochastic depth (drop_path 0)")
        drop_path = None
    if drop_path is None:
        return copy.deepcopy(model).to(device)
    if not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"drop_path must be in [0, 1), got {drop_path}")
    rebuilt = type(model)(dataclasses.replace(config, drop_path=drop_path))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.to(device)


# ------------------------------------------------------------------ data
def take(dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """indices (B,) of a labelled dataset -> (images (B', C, H, W), labels (B',)); B' < B when an
    on_error="skip" dataset could not read some of them (noted in `dataset.skipped`); images float in [0, 1]."""
    if hasattr(dataset, "get_batch"):
        batch = dataset.get_batch(indices)
    else:
        batch = collate_readable([dataset[int(i)] for i in indices], dataset)
        if batch is None:
            raise DataError(f"none of the {len(indices)} images of a fine-tuning batch could be read; check the data")
    return _check_batch(to_device_float(batch), "the fine-tuning dataset")


def dataset_labels(dataset, what: str) -> torch.Tensor:
    """All labels (N,) of a labelled dataset (its `labels` tensor when it has one); DataError when
    some are missing (-1) or the dataset is empty."""
    labels = getattr(dataset, "labels", None)
    if not isinstance(labels, torch.Tensor):
        labels = torch.cat([_check_batch(b, what)[1] for b in labelled_batches(dataset, 1024)] or
                           [torch.zeros(0, dtype=torch.long)])
    if len(labels) == 0:
        raise DataError(f"the {what} is empty")
    if labels.min() < 0:
        raise DataError(f"the {what} has unlabelled images (label {int(labels.min())}); fine-tuning needs a "
                        f"label for every image")
    return labels.long()


@torch.no_grad()
def evaluate_top1(classifier: nn.Module, dataset, batch_size: int = 512, progress: bool = False,
                  desc: str = "evaluate") -> float:
    """Top-1 accuracy in % of classifier (put in eval mode, left there) over a labelled dataset."""
    classifier.eval()
    device = model_device(classifier)
    correct = total = 0
    for batch in tqdm(labelled_batches(dataset, batch_size), desc=desc, disable=not progress, leave=False):
        images, labels = _check_batch(batch, "the evaluation dataset")
        logits = classifier(images.to(device))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        total += len(labels)
    if total == 0:
        raise DataError("the evaluation dataset is empty")
    return 100.0 * correct / total


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image (N, C, H, W) left-right with probability 1/2 (draws from `generator`)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


# ------------------------------------------------------------------ the loop
@dataclass
class FineTuneResult:
    """Top-1 accuracies in % after fine-tuning (train: the train split in eval mode, no augmentation),
    the test top-1 after every epoch, and the fine-tuned classifier (eval mode)."""

    train_top1: float
    test_top1: float
    epochs: int
    seconds: float
    test_top1_per_epoch: list[float] = field(default_factory=list)
    lr: float = 0.0
    trainable_blocks: int | None = None
    trainable_parameters: int = 0
    classifier: FineTuneClassifier | None = None


def check_recipe(epochs, batch_size, lr, layer_decay, weight_decay, label_smoothing, mixup, cutmix) -> None:
    """ConfigError naming the first value out of range."""
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"the learning rate must be a positive number, got {lr}")
    if not 0.0 < layer_decay <= 1.0:
        raise ConfigError(f"layer_decay must be in (0, 1] (1 = no decay), got {layer_decay}")
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not (mixup >= 0 and cutmix >= 0):
        raise ConfigError(f"mixup and cutmix alphas must be >= 0 (0 = off), got {mixup} and {cutmix}")


def finetune(model: nn.Module, train_set, test_set, *, epochs: int = 5, batch_size: int = 128,
             lr: float | None = None, blr: float = 4e-3, layer_decay: float = 0.75, weight_decay: float = 0.05,
             warmup_epochs: float | None = None, drop_path: float | None = None, label_smoothing: float = 0.1,
             mixup: float = 0.0, cutmix: float = 0.0, mixup_prob: float = 1.0, flip: bool = True,
             trainable_blocks: int | None = None, pool: str = "mean", num_classes: int | None = None,
             seed: int = 0, device=None, eval_batch_size: int = 512, progress: bool = True) -> FineTuneResult:
    """Fine-tune a copy of `model` (with `features(images, pool)`) on train_set, report top-1.

    Args:
        model: a pretrained mimkit model (mae, beitv2, maskgit, mage, revcolv2); not modified.
        train_set, test_set: labelled datasets of {"images": (C, H, W) in [0, 1], "labels": int64}
            (`get_batch` used when present, as mimkit.eval.features).
        epochs, batch_size: passes over train_set (reshuffled every epoch, last batch kept).
        lr: peak learning rate; default blr * batch_size / 256 (MAE's scaling rule).
        layer_decay: d of the lr scale d^(L+1-layer_id) (1 = none; MAE 0.65 ViT-B, 0.75 ViT-L).
        weight_decay: AdamW's, on weight matrices only.
        warmup_epochs: linear warmup length; default epochs / 20 (MAE's 5 of 100).
        drop_path: stochastic depth rate (rebuilds the model); None keeps the model's own.
        label_smoothing, mixup, cutmix, mixup_prob: the target recipe (mimkit.eval.mixup); MAE
            uses 0.1, 0.8, 1.0, 1.0 on ImageNet.
        flip: random horizontal flips of the train batches.
        trainable_blocks: None = full fine-tuning; N = partial (module docstring).
        pool: the features' pooling, "mean" (MAE's global pool) or "cls".
        num_classes: default max label + 1 over both splits.
        seed: head init, shuffling, flips, mixup and drop path; the global RNG is left as it was.
        device: where to train; default the model's device.
        eval_batch_size: images per forward pass when evaluating.
        progress: tqdm bar over the epochs with the running loss.
    """
    lr = scaled_lr(blr, batch_size) if lr is None else lr
    check_recipe(epochs, batch_size, lr, layer_decay, weight_decay, label_smoothing, mixup, cutmix)
    train_labels, test_labels = dataset_labels(train_set, "train split"), dataset_labels(test_set, "test split")
    seen = int(max(train_labels.max(), test_labels.max())) + 1
    num_classes = seen if num_classes is None else num_classes
    if num_classes < max(seen, 2):
        raise ConfigError(f"num_classes={num_classes} but the labels need at least {max(seen, 2)}")
    device = model_device(model) if device is None else torch.device(device)
    started = time.perf_counter()
    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        classifier = FineTuneClassifier(prepare_model(model, drop_path, device), num_classes, pool).to(device)
        sample = take(train_set, torch.arange(min(2, len(train_labels))))[0].to(device)
        trainable = select_trainable(classifier, used_parameters(classifier, sample), trainable_blocks)
        optimizer = torch.optim.AdamW(layer_decay_groups(classifier, weight_decay, layer_decay), lr=lr,
                                      betas=(0.9, 0.999))
        mixer = Mixup(num_classes, mixup, cutmix, mixup_prob, label_smoothing=label_smoothing, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        n = len(train_labels)
        steps_per_epoch = math.ceil(n / batch_size)
        total = epochs * steps_per_epoch
        warmup = max(1, round((epochs / 20 if warmup_epochs is None else warmup_epochs) * steps_per_epoch))
        per_epoch, step = [], 0
        with tqdm(total=epochs, desc="fine-tune", disable=not progress, leave=False) as bar:
            for _ in range(epochs):
                train_mode(classifier)
                order, running = torch.randperm(n, generator=generator), 0.0
                for i in range(steps_per_epoch):
                    images, labels = take(train_set, order[i * batch_size:(i + 1) * batch_size])
                    images, labels = images.to(device), labels.to(device)
                    if flip:
                        images = random_hflip(images, generator)
                    set_lr(optimizer, warmup_cosine(step, total, warmup, lr))
                    if mixer.active:
                        images, targets = mixer(images, labels)
                        loss = soft_cross_entropy(classifier(images), targets)
                    else:
                        loss = F.cross_entropy(classifier(images).float(), labels, label_smoothing=label_smoothing)
                    if not torch.isfinite(loss):
                        raise MimkitError(f"the fine-tuning loss became {loss.item()} at step {step}; "
                                          f"lower the learning rate (lr {lr:g})")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    running += loss.item()
                    step += 1
                per_epoch.append(evaluate_top1(classifier, test_set, eval_batch_size))
                bar.set_postfix(loss=f"{running / steps_per_epoch:.4f}", test=f"{per_epoch[-1]:.2f}", refresh=False)
                bar.update(1)
        train_top1 = evaluate_top1(classifier, train_set, eval_batch_size)
    trainable = set(trainable)
    return FineTuneResult(train_top1=train_top1, test_top1=per_epoch[-1], epochs=epochs,
                          seconds=time.perf_counter() - started, test_top1_per_epoch=per_epoch, lr=lr,
                          trainable_blocks=trainable_blocks,
                          trainable_parameters=sum(p.numel() for n, p in classifier.named_parameters()
                                                   if n in trainable),
                          classifier=classifier)


# ------------------------------------------------------------ comparison
class FineTune(ProbeProtocol):
    """`finetune` as a protocol of `mimkit.eval.comparison`: one row per trainable_blocks value
    (None = full fine-tuning), each value checked against the model's depth before the first run;
    `recipe` goes to `finetune` (the same recipe and seed for both models)."""

    setting_column = "trainable blocks"
    left_columns = 3
    default_pool = "mean"

    def __init__(self, trainable_blocks=(None,), **recipe):
        self.trainable_blocks, self.recipe = tuple(trainable_blocks), recipe

    def check(self, model, method: str = "") -> None:
        depth = num_layers(model)
        for n in self.trainable_blocks:
            if n is not None and not 0 <= n <= depth:
                raise ConfigError(f"trainable blocks {n} is outside 0..{depth}: the {method or 'model'} has "
                                  f"{depth} layers")

    def run(self, model, train_set, test_set, pool: str) -> list[FineTuneResult]:
        return [finetune(model, train_set, test_set, pool=pool, trainable_blocks=n, **self.recipe)
                for n in self.trainable_blocks]

    def setting(self, result: FineTuneResult) -> int | None:
        return result.trainable_blocks

    def setting_text(self, setting: int | None) -> str:
        return "all" if setting is None else str(setting)

    def title(self, rows: list) -> str:
        recipe = f"{rows[0].pretrained.epochs} epochs, peak lr {rows[0].pretrained.lr:.3g}" if rows else ""
        return f"fine-tuning test top-1 (%), {recipe}; pretrained vs the same architecture at random init"
