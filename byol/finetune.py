"""Stage 3: random-init vs BYOL-init classifiers on the labelled images, fine-tuned or frozen.

Every condition (init x mode x seed x number of labels) trains the same head on the same labelled
images and is scored on the same held-out test split, with the same budget, so the comparison is
fair. Frozen mode computes the backbone's features once (eval mode) and trains only the head.
"""

from __future__ import annotations

import hashlib
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
from byol.cache import check_view_size, default_cache_size
from byol.data import Split, labelled_rows
from byol.device import autocast, grad_scaler
from byol.distributed import SINGLE_PROCESS, Ranks, Runtime, average_buffers, sync_batchnorm, wrap
from byol.errors import UserError, first_line
from byol.evaluate import eval_view, extract_features
from byol.files import load_torch
from byol.model import MIN_BATCH_SIZE, MIN_BATCH_SIZE_REASON, RESNET18_FEATURES, resnet18_backbone
from byol.outputs import INITS, MODES
from byol.pretrain import WEIGHTS_FILE, PretrainConfig
from byol.schedules import lr_at
from byol.step import backward_step

log = logging.getLogger(__name__)

# Fine-tuning sees light augmentation only: a random crop of at least a quarter of the image, and a flip.
LIGHT_VIEW = ViewConfig(crop_scale=(0.25, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
PROBE_FOLDS = 5  # cross-validation folds that choose the frozen probe's learning rate
EVAL_BATCH = 256  # images (or feature rows) scored per forward pass
PREDICTIONS_KEY = "test_predictions"  # the last metrics row's predicted classes (a tensor, not a column)


@dataclass
class ClassifierConfig:
    inits: list[str] = field(default_factory=lambda: list(INITS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    seeds: int = 3
    n_labels: list[int] = field(default_factory=lambda: [0])  # 0: the whole labelled split
    epochs: int = 30
    batch_size: int = 32  # per process; the global batch is batch_size x world size
    # Fine-tuning: the backbone's AdamW learning rate, one of these per (init, label count), chosen by
    # cross-validation on seed 0's labelled images (choose_finetune_lr); a single value is used as it is.
    # A fixed 1e-3 moves every weight by about 1e-3 per step, against conv weights of 0.02-0.06: after
    # a few dozen steps little of a pretrained init is left, so gentler rates are candidates too.
    finetune_lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    finetune_folds: int = 3  # each fold fine-tunes a whole network: 3 folds cost 0.5x of 5
    cv_every_seed: bool = False  # choose the fine-tuning rate on every seed's images (x seeds the cost)
    labelled_sets: str = "per-seed"  # LABELLED_SETS: where each seed's labelled images come from
    head_lr: float = 1e-2  # the fine-tuned network's linear head (without --lp-ft)
    # LP-FT (Kumar et al. 2022, arXiv 2202.10054): fit the linear head on the frozen backbone first,
    # then fine-tune everything at the backbone's rate, head included, so that a random head's large
    # early gradients do not distort the pretrained features.
    lp_ft: bool = False
    # Frozen mode: the linear probe's learning rate, one of these per run, chosen by cross-validation
    # on that run's labelled images (choose_probe_lr); a single value is used as it is.
    probe_lrs: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    # Frozen random backbones: BatchNorm statistics recomputed on this many unlabelled images (0: never),
    # kept for a run when its probe scores higher on the validation split than with the initial ones.
    bn_images: int = 2048
    weight_decay: float = 1e-4
    image_size: int = 0  # 0: byol.pt's image size, or PretrainConfig's default without byol.pt
    cache_size: int = 0  # 0: default_cache_size(image_size)
    # A rate chosen on an edge of its grid tells only that the grid stopped there: cross-validation
    # tries up to this many rates past the edge (widened_grid), for both inits and both modes.
    widen_rates: int = 2
    eval_every: int = 1  # test loss/accuracy every N epochs (and always at the last)
    # The split every run is scored on: the test split for a study's final tables; the validation split
    # where the scores choose something (recipe_search's probes), so that the test split never chooses.
    score_split: str = "test"
    # auto: scored on score_split when the split holds any, else cv: stratified k-fold cross-validation
    # on each run's labelled images (eval_folds folds, one repeat per seed), for a user whose labels are
    # too few to hold a test set out.
    evaluation: str = "auto"
    eval_folds: int = 5
    sync_bn: bool = False  # fine-tuning under torchrun: BatchNorm statistics over the global batch

    def check(self) -> None:
        """The flags' own checks, before anything is read or trained."""
        if self.batch_size < MIN_BATCH_SIZE:
            raise UserError(f"--batch-size {self.batch_size}: {MIN_BATCH_SIZE_REASON}")
        for flag, rates in (("--probe-lrs", self.probe_lrs), ("--finetune-lrs", self.finetune_lrs)):
            if not rates or not all(math.isfinite(lr) and lr > 0 for lr in rates):
                raise UserError(f"{flag} {rates}: give one or more learning rates above 0")
        if self.finetune_folds < 2:
            raise UserError(f"--finetune-folds {self.finetune_folds}: cross-validation needs 2 or more")
        if self.evaluation not in EVALUATIONS:
            raise UserError(f"--evaluation {self.evaluation}: choose from {','.join(EVALUATIONS)}")
        if self.eval_folds < 2:
            raise UserError(f"--eval-folds {self.eval_folds}: cross-validation needs 2 or more")
        if self.score_split not in SCORE_SPLITS:
            raise UserError(f"--score-split {self.score_split}: choose from {','.join(SCORE_SPLITS)}")
        if self.labelled_sets not in LABELLED_SETS:
            raise UserError(f"--labelled-sets {self.labelled_sets}: choose from {','.join(LABELLED_SETS)}")
        for flag, values, allowed in (("--inits", self.inits, INITS), ("--modes", self.modes, MODES)):
            unknown = [value for value in values if value not in allowed]
            if unknown or not values:
                raise UserError(f"{flag} {','.join(values)}: choose from {','.join(allowed)}")

    def resolved(self, byol_config: dict) -> ClassifierConfig:
        """Checked, with the sizes left at 0 filled in: train at byol.pt's image size (`byol_config`,
        {} without one) and reuse its cache, unless told otherwise."""
        self.check()
        image_size = self.image_size or byol_config.get("image_size") or PretrainConfig().image_size
        cache_size = self.cache_size
        if not cache_size:
            same_size = byol_config.get("image_size") == image_size
            cache_size = (
                byol_config["cache_size"]
                if same_size and byol_config.get("cache_size")
                else default_cache_size(image_size)
            )
        check_view_size(image_size, cache_size)
        return replace(self, image_size=image_size, cache_size=cache_size)


def images_per_step(world_size: int, finetune: bool) -> int:
    """The fewest images a training step can take: fine-tuning's BatchNorm needs two on every
    process; a linear probe trains the whole batch on every process, so one image will do."""
    return world_size * MIN_BATCH_SIZE if finetune else 1


LABELLED_SETS = ("per-seed", "split")
SCORE_SPLITS = ("test", "validation")
EVALUATIONS = ("auto", "test", "cv")


def labelled_pool(split: Split, seed: int, labelled_sets: str) -> list[int]:
    """The cache rows a run's labelled set is drawn from.

    per-seed (the study's, on a folder where every image has its folder label): seed 0 keeps the
    split's own labelled images; every other seed draws its own set from all the pretraining images
    (labelled and unlabelled, whose folder labels a real low-label user would not have), so the spread
    over seeds includes which images happened to be labelled, at every label count. split (a user's own
    labels): every seed draws from the split's labelled images, which at their full count is one set.
    """
    if labelled_sets == "split" or seed == 0:
        return split.indices("labelled")
    return labelled_rows(split, "labelled", "unlabelled")


def balanced_subset(split: Split, n_labels: int, seed: int, labelled_sets: str = "split") -> list[int]:
    """`n_labels` cache rows drawn from labelled_pool, balanced across classes, chosen by `seed`.

    The same rows for both inits and both modes. --n-labels may not exceed the split's labelled images
    (seed 0's pool), so that every seed trains on as many images as the split holds labels.
    """
    labelled = split.table.loc[split.indices("labelled")]
    classes = sorted(labelled["label"].unique())
    if n_labels > len(labelled) or (n_labels and n_labels < len(classes)):
        raise UserError(
            f"--n-labels {n_labels}: must be between {len(classes)} (one per class) and the "
            f"{len(labelled)} labelled images"
        )
    n_labels = n_labels or len(labelled)  # 0: as many as the split holds labels
    pool = split.table.loc[labelled_pool(split, seed, labelled_sets)]
    if n_labels == len(pool):
        return pool.index.tolist()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    base, remainder = divmod(n_labels, len(classes))
    extra = set(torch.randperm(len(classes), generator=generator)[:remainder].tolist())
    for position, label in enumerate(classes):
        rows = pool.index[pool["label"] == label].tolist()
        quota = base + (position in extra)
        if quota > len(rows):
            raise UserError(f"--n-labels {n_labels}: class {label} has only {len(rows)} labelled images")
        order = torch.randperm(len(rows), generator=generator)[:quota]
        chosen.extend(rows[i] for i in order.tolist())
    return sorted(chosen)


def labelled_set_id(split: Split, rows: list[int]) -> str:
    """classifier_metrics.csv's labelled_set: a short hash of the run's labelled images' paths, so that
    which seeds trained on the same images can be read off the file."""
    paths = "\n".join(sorted(split.table.loc[rows, "path"]))
    return hashlib.sha256(paths.encode()).hexdigest()[:10]


def load_byol_backbone(out_dir: Path) -> tuple[nn.Module, dict]:
    """The backbone of byol.pt in a fresh resnet18; a clear error when it is missing or foreign."""
    path = out_dir / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: run train_byol.py first, or pass --inits random")
    try:
        weights = load_torch(path, "re-run train_byol.py")
        backbone = resnet18_backbone()
        backbone.load_state_dict(weights["backbone"], strict=True)
    except (RuntimeError, KeyError, TypeError) as error:
        raise UserError(
            f"{path} does not hold resnet18 backbone weights ({first_line(error)}); re-run train_byol.py"
        ) from None
    return backbone, weights.get("config", {})


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
        config = replace(self.config, eval_every=self.config.epochs, **settings)
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


def standardizer(train_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and 1/std of the training features; 0 for dimensions constant over them."""
    mean, std = train_features.mean(0), train_features.std(0, unbiased=False)
    alive = std > 1e-6 * std.max().clamp_min(1e-12)
    scale = torch.where(alive, std, torch.inf).reciprocal()  # 1 / inf = 0 for the dead dimensions
    return mean, scale


def standardize(
    train_features: torch.Tensor, test_features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets shifted and scaled per dimension by the training features' mean and std.

    The linear probe's usual first step (a StandardScaler; MAE's BatchNorm without affine): the raw
    features of a random and a BYOL backbone differ in scale by orders of magnitude, which no single
    head learning rate suits; unscaled, the head sat on one class for epochs or jumped around.
    Dimensions constant over the training images (dead ReLUs) carry nothing to learn from: set to zero.
    """
    mean, scale = standardizer(train_features)
    return (train_features - mean) * scale, (test_features - mean) * scale


def cross_validate(
    candidates: list[float], n_items: int, folds: int, score_fold, job: Job, what: str
) -> tuple[float, dict[float, float]]:
    """The candidate with the best mean held-out accuracy over `folds` folds of `n_items` training
    items (ties: the lower held-out loss), and every candidate's mean held-out accuracy, in the order
    tried: `candidates`, then, with job.config.widen_rates, rates past the grid's edge (widened_grid).
    `score_fold(candidate, kept, held_out)` trains on the rows `kept` and returns its last metrics
    row, scored on `held_out`; the test split is never looked at. The folds are drawn by job.seed.
    """
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(job.seed))
    held_out = [order[fold::folds] for fold in range(folds)]

    def score(candidate: float) -> tuple[float, float]:
        accuracy = loss = 0.0
        for fold in range(folds):
            # The folds' held-out scores are not test scores: the bar says what it is doing instead.
            job.progress.set_postfix_str(f"choosing {what}: {candidate:g}, fold {fold + 1}/{folds}")
            kept = torch.cat([held_out[other] for other in range(folds) if other != fold])
            last = score_fold(candidate, kept, held_out[fold])
            accuracy += last["test_acc"] / folds
            loss += last["test_loss"] / folds
        return accuracy, -loss

    scores = widened_grid(candidates, score, job.config.widen_rates)
    return max(scores, key=scores.__getitem__), {rate: accuracy for rate, (accuracy, _) in scores.items()}


def widened_grid(candidates: list[float], score, widen: int) -> dict[float, tuple]:
    """Every candidate's score (`score(candidate)`, higher is better), in the order tried. While the
    best sits on an edge of the rates tried (of 2 or more), one more rate past that edge, a grid step
    further (the ratio of the two rates nearest the edge), up to `widen` times in all: a choice on the
    edge of its grid may only say that the grid stopped too early."""
    scores = {candidate: score(candidate) for candidate in candidates}
    for _ in range(widen if len(scores) > 1 else 0):
        ordered = sorted(scores)
        best = max(scores, key=scores.__getitem__)
        if best not in (ordered[0], ordered[-1]):
            break
        edge, inner = (ordered[0], ordered[1]) if best == ordered[0] else (ordered[-1], ordered[-2])
        beyond = edge * edge / inner
        scores[beyond] = score(beyond)
    return scores


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


def choose_finetune_lr(
    init: str, byol_state: dict | None, train: Examples, n_classes: int, job: Job
) -> float:
    """The fine-tuning backbone rate chosen by config.finetune_folds-fold cross-validation: each fold
    fine-tunes a fresh `init` backbone (seed job.seed) on the rest of the images `train` for the whole
    budget and is scored on its held-out part; the test split plays no part.

    Both inits choose from the same grid, so a rate that suits only a random backbone (large steps
    that overwrite a pretrained one) cannot decide the comparison by itself.
    """
    config = job.config
    if len(config.finetune_lrs) == 1:
        return config.finetune_lrs[0]

    def score_fold(lr: float, kept: torch.Tensor, held_out: torch.Tensor) -> dict:
        backbone = make_backbone(init, job.seed, byol_state)
        return fine_tune(backbone, fold_task(train, n_classes, kept, held_out), job.trial(finetune_lrs=[lr]))[
            -1
        ]

    folds = config.finetune_folds
    chosen, accuracies = cross_validate(
        config.finetune_lrs, len(train), folds, score_fold, job, "fine-tuning lr"
    )
    scores = ", ".join(f"{lr:g}: {accuracy:.3f}" for lr, accuracy in sorted(accuracies.items()))
    if not job.progress.disable:  # above the bar, not glued to it; once, from the first process
        job.progress.write(
            f"{init} init, {len(train)} labels: fine-tuning lr {chosen:g}, chosen by {folds}-fold "
            f"held-out accuracy on seed {job.seed}'s labelled images ({scores})"
        )
    return chosen


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


def cv_training_size(n_items: int, folds: int) -> int:
    """The fewest training items a fold of `folds`-fold cross-validation leaves (largest fold held out)."""
    return n_items - math.ceil(n_items / folds)


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
        raise ValueError("choose the fine-tuning rate first (choose_finetune_lr), then pass that one")
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
