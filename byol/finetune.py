"""Stage 3: random-init vs BYOL-init classifiers on the labelled images, fine-tuned or frozen.

Every condition (init x mode x seed x number of labels) trains the same head on the same labelled
images and is scored on the same held-out test split, with the same budget, so the comparison is
fair. Frozen mode computes the backbone's features once (eval mode) and trains only the head.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from byol.augment import ViewConfig, make_view
from byol.classifier_config import ClassifierConfig
from byol.cross_validation import choose_rate_then_length, cross_validate, fold_scorer
from byol.device import autocast, grad_scaler
from byol.distributed import SINGLE_PROCESS, Ranks, Runtime, average_buffers, sync_batchnorm, wrap
from byol.errors import UserError, first_line
from byol.evaluate import eval_view, extract_features, standardize, standardizer
from byol.files import load_torch, read_json
from byol.model import MIN_BATCH_SIZE, RESNET18_FEATURES, resnet18_backbone
from byol.schedules import lr_at
from byol.step import backward_step

log = logging.getLogger(__name__)

# Fine-tuning sees light augmentation only: a random crop of at least a quarter of the image, and a flip.
LIGHT_VIEW = ViewConfig(crop_scale=(0.25, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
PROBE_FOLDS = 5  # cross-validation folds that choose the frozen probe's learning rate
EVAL_BATCH = 256  # images (or feature rows) scored per forward pass
PREDICTIONS_KEY = "test_predictions"  # the last metrics row's predicted classes (a tensor, not a column)


def images_per_step(world_size: int, finetune: bool) -> int:
    """The fewest images a training step can take: fine-tuning's BatchNorm needs two on every
    process; a linear probe trains the whole batch on every process, so one image will do."""
    return world_size * MIN_BATCH_SIZE if finetune else 1


def load_byol_backbone(path: Path) -> tuple[nn.Module, dict, str | None]:
    """The backbone of byol.pt (`path`, RunOptions.weights_path) in a fresh resnet18, its pretraining
    config, and the Split.held_out_fingerprint of the split it was pretrained on (None in files from
    before 2026-12-06); a clear error when it is missing or foreign. A released backbone (a bare
    state dict, experiments/release_weights.py) takes its config and fingerprint from the JSON beside it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run train_byol.py first, or pass --inits random")
    try:
        weights = load_torch(path, "re-run train_byol.py")
        if "backbone" not in weights:  # a released backbone: the state dict itself, metadata beside it
            sidecar = path.with_suffix(".json")
            metadata = read_json(sidecar, "release the weights again") if sidecar.is_file() else {}
            weights = {"backbone": weights, **metadata}
        backbone = resnet18_backbone()
        backbone.load_state_dict(weights["backbone"], strict=True)
    except (RuntimeError, KeyError, TypeError) as error:
        raise UserError(
            f"{path} does not hold resnet18 backbone weights ({first_line(error)}); re-run train_byol.py"
        ) from None
    return backbone, weights.get("config", {}), weights.get("held_out_sha256")


def make_backbone(init: str, seed: int, byol_state: dict | None) -> nn.Module:
    torch.manual_seed(seed)
    backbone = resnet18_backbone()
    if init == "byol":
        backbone.load_state_dict(byol_state)
    return backbone


@dataclass(frozen=True)
class Examples:
    """Inputs and their labels: cached images (N, 3, S, S) uint8, or backbone features (N, D)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, rows) -> Examples:
        return Examples(self.inputs[rows], self.labels[rows])


@dataclass(frozen=True)
class Task:
    """What one classifier trains on and is scored on (the test split, or a held-out fold)."""

    train: Examples
    test: Examples
    n_classes: int


def fold_task(train: Examples, n_classes: int, kept: torch.Tensor, held_out: torch.Tensor) -> Task:
    """Cross-validation's task: trained on the rows `kept` of `train`, scored on its rows `held_out`."""
    return Task(train[kept], train[held_out], n_classes)


@dataclass(frozen=True)
class Job:
    """How one classifier trains: its seed (head, batch order, views), settings and runtime, and the
    progress bar its status goes on (a disabled one: silent)."""

    seed: int
    config: ClassifierConfig
    runtime: Runtime
    progress: tqdm = field(default_factory=lambda: tqdm(disable=True))
    count_epochs: bool = False  # the bar counts this job's epochs (else its caller counts runs)

    def trial(self, **settings) -> Job:
        """A silent job with some settings changed, scored at its last epoch only: a choice's trial run."""
        config = replace(self.config, **settings)
        config = replace(config, eval_every=config.epochs)
        return Job(self.seed, config, self.runtime)


@torch.no_grad()
def evaluate_head(
    backbone: nn.Module | None, head: nn.Module, examples: Examples, job: Job, shards: Ranks = SINGLE_PROCESS
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and every example's predicted class (on the CPU); the inputs are
    cached images, or features when backbone is None.

    With `shards` (the processes under torchrun) each rank scores its own shard and the sums are added
    up (the predictions too: each rank fills its own shard's, zeros elsewhere).
    """
    head.eval()
    if backbone is not None:
        backbone.eval()
    runtime = job.runtime
    device = runtime.device
    start, stop = shards.shard_bounds(len(examples))
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct
    predictions = torch.zeros(len(examples), dtype=torch.int64, device=device)
    for first in range(start, stop, EVAL_BATCH):
        batch = examples[first : min(first + EVAL_BATCH, stop)]
        inputs, target = batch.inputs.to(device), batch.labels.to(device)
        with autocast(device, runtime.precision):
            if backbone is not None:
                view = eval_view(inputs, job.config.image_size)
                inputs = backbone(view.contiguous(memory_format=runtime.memory_format))
            logits = head(inputs)
        totals[0] += F.cross_entropy(logits.float(), target, reduction="sum")
        predicted = logits.argmax(1)
        totals[1] += (predicted == target).sum()
        predictions[first : first + len(predicted)] = predicted
    loss_sum, correct = shards.all_reduce_sum(totals).tolist()
    return loss_sum / len(examples), correct / len(examples), shards.all_reduce_sum(predictions).cpu()


def choose_probe_lr(train: Examples, n_classes: int, job: Job) -> float:
    """The probe learning rate chosen by PROBE_FOLDS-fold cross-validation on the training features.

    No single rate suits every backbone: on this project's cats and dogs a random backbone's
    standardised features span ~300 directions and a BYOL backbone's ~50, and a probe at 1e-2 kept
    jumping on the BYOL features without fitting its 250 training images, while at 1e-4 it barely
    moved on the random ones. Each fold is standardised by its own training part, as the final probe is.
    """
    rates = job.config.probe_lrs
    folds = min(PROBE_FOLDS, len(train))
    if len(rates) == 1 or folds < 2:
        return rates[0]

    def score_fold(lr: float, kept: torch.Tensor, held_out: torch.Tensor) -> dict:
        # the runtime's processes: the same global batch as the probe it chooses for
        return train_probe(fold_task(train, n_classes, kept, held_out), job.trial(probe_lrs=[lr]))[-1]

    chosen, _ = cross_validate(rates, len(train), folds, score_fold, job, "probe lr")
    return chosen


def choose_finetune(
    init: str, byol_state: dict | None, train: Examples, n_classes: int, job: Job
) -> tuple[float, int]:
    """The fine-tuning backbone rate and run length, chosen by config.finetune_folds-fold
    cross-validation (choose_rate_then_length): each fold fine-tunes a fresh `init` backbone (seed
    job.seed) on the rest of the images `train` and is scored on its held-out part; the test split
    plays no part. The rate is chosen at config.epochs; then, with two or more config.finetune_epochs,
    the same folds score each of those lengths at that rate.

    Both inits choose from the same grids, so a rate that suits only a random backbone (large steps
    that overwrite a pretrained one) cannot decide the comparison by itself, nor a length that only
    the slower learner needs.
    """
    config = job.config
    folds = config.finetune_folds

    def score_fold(candidate: tuple[float, int], kept: torch.Tensor, held_out: torch.Tensor) -> dict:
        lr, epochs = candidate
        backbone = make_backbone(init, job.seed, byol_state)
        task = fold_task(train, n_classes, kept, held_out)
        return fine_tune(backbone, task, job.trial(finetune_lrs=[lr], epochs=epochs))[-1]

    cv = fold_scorer(len(train), folds, score_fold, job, "fine-tuning")
    choice = choose_rate_then_length(
        config, lambda lr, epochs: cv((lr, epochs), f"lr {lr:g}, {epochs} epochs")
    )
    said = choice.text()
    if said and not job.progress.disable:  # above the bar, not glued to it; once, from the first process
        job.progress.write(
            f"{init} init, {len(train)} labels: fine-tuning {said}, chosen by {folds}-fold held-out "
            f"accuracy on seed {job.seed}'s labelled images"
        )
    return choice.lr, choice.epochs


def probe_head(backbone: nn.Module, train: Examples, n_classes: int, job: Job) -> tuple[nn.Linear, float]:
    """LP-FT's first stage: the frozen-backbone linear probe on the images `train` (its rate chosen by
    cross-validation, as in frozen mode), returned as a head on the raw features, and its rate."""
    runtime = job.runtime
    backbone = backbone.to(runtime.device, memory_format=runtime.memory_format)
    features = extract_features(backbone, train.inputs, range(len(train)), job.config.image_size, runtime)
    # Scored on its own training features (no test split here): every run scores something.
    probe = Task(Examples(features, train.labels), Examples(features, train.labels), n_classes)
    lr = choose_probe_lr(probe.train, n_classes, job)
    head = new_head(job.seed, n_classes, runtime.device)
    train_probe(probe, job.trial(probe_lrs=[lr]), head)
    # The probe saw standardised features, (x - mean) * scale: fold that into the head's weights.
    mean, scale = standardizer(features)
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.sub_(head.weight @ mean)
    return head, lr


def new_head(seed: int, n_classes: int, device: torch.device) -> nn.Linear:
    """The linear head every condition of a seed starts from."""
    torch.manual_seed(seed + 1)
    return nn.Linear(RESNET18_FEATURES, n_classes).to(device)


@dataclass
class Learner:
    """What _fit trains. `model` maps a batch of inputs to logits: `head` alone on features (backbone
    None), or backbone + head on images (augmented in _fit, each batch split over `shards`). `rates`
    go in every metrics row, and `choosing_seconds` (spent choosing them) in the first epoch's seconds."""

    model: nn.Module
    head: nn.Module
    backbone: nn.Module | None
    optimizer: torch.optim.Optimizer
    rates: dict[str, float]
    choosing_seconds: float
    shards: Ranks = SINGLE_PROCESS


def train_probe(task: Task, job: Job, head: nn.Linear | None = None) -> list[dict]:
    """Frozen mode: a linear head on precomputed backbone features; one metrics dict per epoch.

    The features are standardised by the training features' statistics; the head's rate is chosen
    by choose_probe_lr (each row's head_lr says which). Every process trains the same head (it takes
    seconds), with the global batch of the runtime's processes. `head` (default: new_head) is
    trained in place.
    """
    started = time.perf_counter()
    head_lr = choose_probe_lr(task.train, task.n_classes, job)
    train_features, test_features = standardize(task.train.inputs, task.test.inputs)
    task = Task(
        Examples(train_features, task.train.labels), Examples(test_features, task.test.labels), task.n_classes
    )
    choosing_seconds = time.perf_counter() - started
    head = head if head is not None else new_head(job.seed, task.n_classes, job.runtime.device)
    optimizer = torch.optim.AdamW(
        [{"params": head.parameters(), "lr": head_lr}], weight_decay=job.config.weight_decay
    )
    rates = {"head_lr": head_lr, "backbone_lr": math.nan}
    return _fit(Learner(head, head, None, optimizer, rates, choosing_seconds), task, job)


def fine_tune(backbone: nn.Module, task: Task, job: Job) -> list[dict]:
    """Fine-tune the backbone and a linear head on cached images; one metrics dict per epoch.

    The backbone trains at config.finetune_lrs' one value (backbone_lr), the new head at head_lr, or,
    with --lp-ft, the head starts from probe_head's and trains at the backbone's rate. Under torchrun
    each global batch is split across the processes, with the views each image would get in one.
    """
    config, runtime = job.config, job.runtime
    if len(config.finetune_lrs) != 1:
        raise ValueError("choose the fine-tuning rate first (choose_finetune), then pass that one")
    backbone_lr = config.finetune_lrs[0]
    started, head, head_lr = time.perf_counter(), None, config.head_lr
    if config.lp_ft:  # the head starts as the probe; then everything trains at the backbone's rate
        head, head_lr = probe_head(backbone, task.train, task.n_classes, job)
    choosing_seconds = time.perf_counter() - started
    head = head if head is not None else new_head(job.seed, task.n_classes, runtime.device)
    ranks = runtime.ranks
    if config.sync_bn and ranks.distributed:
        backbone = sync_batchnorm(backbone, runtime.device)
    backbone = backbone.to(runtime.device, memory_format=runtime.memory_format)
    groups = [
        {"params": head.parameters(), "lr": backbone_lr if config.lp_ft else head_lr},
        {"params": backbone.parameters(), "lr": backbone_lr},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    model = wrap(nn.Sequential(backbone, head), ranks, runtime.device)
    rates = {"head_lr": head_lr, "backbone_lr": backbone_lr}
    return _fit(Learner(model, head, backbone, optimizer, rates, choosing_seconds, ranks), task, job)


@dataclass
class _Schedule:
    """_fit's step count and random streams across epochs: the rates' cosine decay, the batch order,
    and the fine-tuning views."""

    base_lrs: list[float]
    total_steps: int
    global_batch: int
    order: torch.Generator
    views: torch.Generator
    scaler: torch.amp.GradScaler
    step: int = 0


def _fit(learner: Learner, task: Task, job: Job) -> list[dict]:
    """The epochs both modes share: cosine-decayed rates, one optimiser step per batch, a metrics row
    per epoch (scored on task.test every config.eval_every epochs and at the last; the last row also
    holds the predicted class of every task.test example under PREDICTIONS_KEY)."""
    config, runtime = job.config, job.runtime
    global_batch = (
        config.batch_size * runtime.ranks.world_size
    )  # in frozen mode too: the same steps everywhere
    schedule = _Schedule(
        base_lrs=[group["lr"] for group in learner.optimizer.param_groups],
        total_steps=config.epochs * math.ceil(len(task.train) / global_batch),
        global_batch=global_batch,
        order=torch.Generator().manual_seed(job.seed),
        views=torch.Generator(device=runtime.device).manual_seed(job.seed),
        scaler=grad_scaler(runtime.device, runtime.precision),
    )
    rows = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        train_loss, train_acc = _train_epoch(learner, task.train, job, schedule)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
        row["test_loss"] = row["test_acc"] = math.nan
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            row["test_loss"], row["test_acc"], predictions = evaluate_head(
                learner.backbone, learner.head, task.test, job, learner.shards
            )
            if epoch == config.epochs:  # the final classifier's, for the paired bootstrap
                row[PREDICTIONS_KEY] = predictions
        row["seconds"] = time.perf_counter() - started  # training and, when due, testing
        if epoch == 1:
            row["seconds"] += learner.choosing_seconds
        rows.append({**row, **learner.rates})
        job.progress.set_postfix(
            epoch=epoch, train_loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.3f}"
        )
        if job.count_epochs:
            job.progress.update()
    return rows


def _train_epoch(learner: Learner, train: Examples, job: Job, schedule: _Schedule) -> tuple[float, float]:
    """One pass over `train` in a fresh random order; the mean training loss and accuracy over every
    process's images. A last batch too small to train on (images_per_step) is left out."""
    device, shards = job.runtime.device, learner.shards
    finetune = learner.backbone is not None
    optimizer = learner.optimizer
    learner.model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, images
    for global_rows in torch.randperm(len(train), generator=schedule.order).split(schedule.global_batch):
        start, stop = shards.shard_bounds(len(global_rows))
        if len(global_rows) < images_per_step(shards.world_size, finetune):  # a too-small last batch
            continue
        batch = train[global_rows[start:stop]]
        inputs, labels = batch.inputs.to(device), batch.labels.to(device)
        for group, base_lr in zip(optimizer.param_groups, schedule.base_lrs):
            group["lr"] = lr_at(schedule.step, schedule.total_steps, 0, base_lr)
        with autocast(device, job.runtime.precision):
            if finetune:
                view = make_view(
                    inputs,
                    LIGHT_VIEW,
                    job.config.image_size,
                    schedule.views,
                    global_batch=len(global_rows),
                    offset=start,
                )
                inputs = view.contiguous(memory_format=job.runtime.memory_format)
            logits = learner.model(inputs)
        loss = F.cross_entropy(logits.float(), labels)
        backward_step(optimizer, schedule.scaler, loss)
        schedule.step += 1
        correct = (logits.argmax(1) == labels).sum().double()
        totals += torch.stack([loss.detach().double() * len(labels), correct, totals.new_tensor(len(labels))])
    if finetune:
        average_buffers(learner.backbone, job.runtime.ranks)
    loss_sum, correct, seen = shards.all_reduce_sum(totals).tolist()
    return loss_sum / seen, correct / seen
