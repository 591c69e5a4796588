"""Fine-tuning a pipeline's UNet for an erasure method: choose the trainable weights, train them in full or as
LoRA (peft, through diffusers' `add_adapter`), query the frozen original alongside without a second UNet, and
package what was learned as one WeightDelta. The pipeline is left exactly as it was.

    with FineTuning(pipe, "xattn") as tuning:          # or lora_rank=4
        train(loss_fn, tuning.parameters, config)       # loss_fn uses pipe.unet and `with tuning.frozen(): ...`
        deltas = tuning.deltas()
"""
from __future__ import annotations

import re
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace

import torch

from ..closed_form.prior import caption_list
from ..edits import WeightDelta
from ..errors import ErasekitError
from ..models import encode
from ..sampling import ddim_scheduler, predict, sampler_defaults, trajectory, unconditional
from ..training import TrainingConfig, train

# Named selections of UNet parameters (diffusers names). ESD's: "xattn" (cross-attention) and "noxattn"
# (everything but cross-attention, the time embedding and the output layers, as the authors' code does).
SELECTIONS = {
    "xattn": r"\.attn2\.",
    "xattn-kv": r"\.attn2\.to_[kv]\.",
    "noxattn": r"^(?!.*\.attn2\.)(?!time_embedding\.)(?!conv_out\.)(?!conv_norm_out\.)",
    "selfattn-xattn-q": r"\.attn1\.|\.attn2\.to_q\.",  # TRCE stage 2
}


def select_parameters(unet: torch.nn.Module, selection: str) -> dict[str, torch.nn.Parameter]:
    """UNet parameters matching a named selection (SELECTIONS) or a regular expression over their names."""
    pattern = SELECTIONS.get(selection, selection)
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ErasekitError(f"trainable selection {selection!r} is not a valid regular expression: {e}") from None
    chosen = {n: p for n, p in unet.named_parameters() if regex.search(n)}
    if not chosen:
        raise ErasekitError(f"the trainable selection {selection!r} matches no parameter of this UNet "
                            f"(named selections: {', '.join(SELECTIONS)})")
    return chosen


@contextmanager
def swapped(parameters: dict[str, torch.nn.Parameter], tensors: dict[str, torch.Tensor]):
    """Parameters hold other tensors for the duration (their storage is swapped, nothing is copied)."""
    kept = {n: parameters[n].data for n in tensors}
    for n, t in tensors.items():
        parameters[n].data = t
    try:
        yield
    finally:
        for n, t in kept.items():
            parameters[n].data = t


class FineTuning:
    """The trainable state of one fine-tuning run on `pipe.unet` (a context manager: leaving it restores the UNet
    bit-exactly, trained or not). Full-rank: the selected weights themselves train, their originals are kept to
    answer `frozen()` by swapping storage (no copy of the UNet). LoRA (`lora_rank` > 0): rank-r adapters on the
    selected linear layers, switched off for `frozen()`, their down-projections drawn from `seed` (peft's own
    init draws from the global RNG: two runs of one config trained different models)."""

    def __init__(self, pipe, selection: str, lora_rank: int = 0, lora_alpha: float | None = None,
                 gradient_checkpointing: bool = False, seed: int = 0):
        if lora_rank < 0:
            raise ErasekitError(f"lora_rank must be ≥ 0, not {lora_rank}")
        self.pipe, self.unet, self.selection = pipe, pipe.unet, selection
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha if lora_alpha is not None else lora_rank
        self.checkpointing, self.seed = gradient_checkpointing, seed
        self.selected = select_parameters(self.unet, selection)
        self.parameters: dict[str, torch.Tensor] = {}
        self.originals: dict[str, torch.Tensor] = {}

    @classmethod
    def of(cls, pipe, config: "FineTuneConfig") -> "FineTuning":
        """The tuning a method's config asks for: its selection, LoRA rank and checkpointing."""
        return cls(pipe, config.trainable, config.lora_rank, gradient_checkpointing=config.gradient_checkpointing,
                   seed=config.seed)

    def __enter__(self) -> "FineTuning":
        self.unet.requires_grad_(False)
        if self.checkpointing:
            self.unet.enable_gradient_checkpointing()
        if self.lora_rank:
            self._add_lora()
        else:
            self.originals = {n: p.detach().clone() for n, p in self.selected.items()}
            for p in self.selected.values():
                p.requires_grad_(True)
            self.parameters = dict(self.selected)
        return self

    def _add_lora(self) -> None:
        from peft import LoraConfig
        modules = sorted({n.rsplit(".", 1)[0] for n in self.selected if n.endswith(".weight")
                          and isinstance(self.unet.get_submodule(n.rsplit(".", 1)[0]), torch.nn.Linear)})
        if not modules:
            raise ErasekitError(f"LoRA needs linear layers, and {self.selection!r} selects none")
        config = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, init_lora_weights="gaussian",
                            target_modules=modules)  # full module names: peft matches them exactly
        self.unet.add_adapter(config, adapter_name="erasekit")
        self.parameters = {n: p for n, p in self.unet.named_parameters() if "lora_" in n}
        self._seed_lora()
        for p in self.parameters.values():
            p.requires_grad_(True)
        self.lora_modules = modules

    @torch.no_grad()
    def _seed_lora(self) -> None:
        """peft's "gaussian" init (A ~ N(0, 1/r), B = 0), drawn from this run's seed in name order."""
        generator = torch.Generator().manual_seed(self.seed)
        for name in sorted(n for n in self.parameters if "lora_A" in n):
            weight = self.parameters[name]
            weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float32) / self.lora_rank)

    @contextmanager
    def frozen(self):
        """The UNet as it was before training, for the duration (no gradients)."""
        with torch.no_grad():
            if self.lora_rank:
                self.unet.disable_adapters()
                try:
                    yield
                finally:
                    self.unet.enable_adapters()
                return
            with swapped(self.selected, self.originals):
                yield

    def deltas(self) -> dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """What was learned, by canonical parameter name: full ΔW, or LoRA's exact (up, down) factors."""
        if not self.lora_rank:
            return {f"unet.{n}": (p.detach() - self.originals[n]) for n, p in self.selected.items()}
        scale = self.lora_alpha / self.lora_rank
        out = {}
        for module in self.lora_modules:
            layer = self.unet.get_submodule(module)
            down = layer.lora_A["erasekit"].weight.detach()
            up = layer.lora_B["erasekit"].weight.detach() * scale
            out[f"unet.{module}.weight"] = (up, down)
        return out

    def __exit__(self, *exc) -> None:
        if self.lora_rank:
            self.unet.unload_lora()
        else:
            with torch.no_grad():  # values back into the weights' own storage: a new allocation may change
                for n, p in self.selected.items():  # how kernels round, and the UNet must be as it was
                    p.copy_(self.originals[n])
        self.unet.requires_grad_(False)
        if self.checkpointing:
            self.unet.disable_gradient_checkpointing()


@dataclass
class FineTuneConfig:
    """Settings every fine-tuning method shares; each method's config subclasses it with its authors' defaults.
    x_t for the losses comes from DDIM trajectories of the frozen model (guidance `sample_guidance`,
    `sample_steps` steps) stopped at a random step."""
    steps: int = 200                 # optimiser steps
    lr: float = 1e-5
    batch_size: int = 1              # prompts (and x_t) per micro-batch
    accumulation: int = 1            # micro-batches per step (under `accelerate launch`: per process)
    optimizer: str = "adam"
    grad_clip: float = 1.0
    seed: int = 0
    sample_steps: int | None = None  # DDIM steps of the x_t trajectories (None: the model's sampler default)
    sample_guidance: float = 3.0     # guidance of those trajectories
    step_window: tuple[float, float] = (0.0, 1.0)  # share of those steps x_t is drawn from (0: first, 1: last)
    sample_model: str = "frozen"     # which model samples x_t: "frozen" (the original) or "trained" (the model
                                     # being trained, on-policy: ESD's code; no TrajectoryPool then)
    pool_seeds: int = 0              # > 0: that many trajectories per prompt, sampled once and reused; 0: a fresh
                                     # trajectory every step (the authors')
    loss_weighting: str = "none"     # "guidance": each sample's loss over the frozen model's guidance energy
    trainable: str = ""              # a named selection (finetune.SELECTIONS) or a regex; empty: the method's
    lora_rank: int = 0               # > 0: train rank-r LoRA adapters (peft) instead of the weights themselves
    gradient_checkpointing: bool = False
    preserve_latents: str = "target"  # where a method's preservation term (lam_preserve) holds the preserved
                                      # prompts: at the target's x_t, or "own" (their own frozen trajectories)
    preserve_pool_seeds: int | None = None  # "own": trajectories pooled per preserved prompt (None: pool_seeds;
                                            # they are hundreds of prompts, so 1 samples a quarter of 4's)
    work_dir: str = ""               # checkpoints and loss log here; a run found there resumes

    def __post_init__(self):
        if self.loss_weighting not in ("none", "guidance"):
            raise ErasekitError(f"loss_weighting must be 'none' or 'guidance', not {self.loss_weighting!r}")
        if self.sample_model not in ("frozen", "trained"):
            raise ErasekitError(f"sample_model must be 'frozen' or 'trained', not {self.sample_model!r}")
        if self.preserve_latents not in ("target", "own"):
            raise ErasekitError(f"preserve_latents must be 'target' or 'own', not {self.preserve_latents!r}")
        for name in ("pool_seeds", "preserve_pool_seeds"):
            value = getattr(self, name)
            if self.sample_model == "trained" and value:
                raise ErasekitError(f"{name} reuses trajectories sampled once: it needs sample_model='frozen'")
            if (value or 0) < 0:
                raise ErasekitError(f"{name} must be ≥ 0, not {value}")
        first, last = self.step_window
        if not 0 <= first < last <= 1:
            raise ErasekitError(f"step_window must be (first, last) with 0 ≤ first < last ≤ 1, "
                                f"not {self.step_window}")

    @classmethod
    def shapeworld_settings(cls, spec) -> dict:
        """Options erasekit chose for ShapeWorld on 2 CPU cores (the bench's rows), laid under the caller's where the
        pipeline is ShapeWorld's (`methods.erase`): the authors' budgets, sized for SD on GPUs, erase nothing there
        in minutes. {}: the method's own defaults everywhere."""
        return {}

    def training(self) -> TrainingConfig:
        return TrainingConfig(steps=self.steps, lr=self.lr, optimizer=self.optimizer, grad_clip=self.grad_clip,
                              accumulation=self.accumulation, seed=self.seed,
                              checkpoint_every=max(1, self.steps // 4), log_every=5)


# The fine-tuners' budget on ShapeWorld (2 CPU cores): 100 optimiser steps, x_t from 10-step DDIM trajectories.
SHAPEWORLD_BUDGET = {"steps": 100, "sample_steps": 10}


def shapeworld_style(spec) -> bool:
    """Is the concept a style of ShapeWorld's: its preset says so, or every target names a texture or its artist."""
    if spec.kind == "style":
        return True
    from ..shapeworld.domain import find_concept
    try:
        return all(find_concept(target)[0] == "texture" for target in spec.targets)
    except KeyError:
        return False


# Prompts the fine-tuning methods train on when the spec gives no templates of its own: the concept alone and in
# neutral frames, so what is unlearned is the concept rather than one sentence (nothing about colour or setting).
GENERIC_TEMPLATES = ("{}", "a {}", "a photo of {}", "a picture of {}", "an image of {}", "a drawing of {}",
                     "a painting of {}", "a rendering of {}")


def training_templates(spec) -> list[str]:
    return list(spec.templates) if list(spec.templates) != ["{}"] else list(GENERIC_TEMPLATES)


def training_prompts(spec, concepts: list[str] | None = None) -> list[str]:
    """Each concept (default: the targets) in each training template, target-major: prompt i of two calls with
    aligned concept lists uses the same template."""
    return [template.format(c) for c in (concepts or spec.targets) for template in training_templates(spec)]


@dataclass
class Prompts:
    """Encoded prompts a loss draws from, and the unconditional rows."""
    texts: list[str]
    embeddings: torch.Tensor
    pooled: torch.Tensor | None
    empty: torch.Tensor
    empty_pooled: torch.Tensor | None

    @classmethod
    def encode(cls, pipe, texts: list[str]) -> "Prompts":
        encoded = encode(pipe, texts, warn=False)
        empty, empty_pooled = unconditional(pipe)
        return cls(texts, encoded.embeddings, encoded.pooled, empty, empty_pooled)

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.embeddings[index], None if self.pooled is None else self.pooled[index]


def window_steps(window: tuple[float, float], steps: int) -> tuple[int, int]:
    """The steps [first, last) of a `steps`-step trajectory that a share window (0: first step, 1: after the last)
    covers; at least one."""
    first = min(steps - 1, int(round(window[0] * steps)))
    return first, max(first + 1, int(round(window[1] * steps)))


@dataclass
class TrajectoryPool:
    """The frozen model's DDIM trajectories for every prompt × `seeds` seeds, sampled once with each step's input
    latents kept: drawing x_t from it costs no sampling (a fresh trajectory per training step costs more UNet calls
    than the loss itself)."""
    latents: torch.Tensor  # [steps, prompts × seeds, ...]: prompt-major
    timesteps: torch.Tensor
    seeds: int

    @classmethod
    def sample(cls, pipe, prompts: Prompts, config: "FineTuneConfig", model, chunk: int = 8) -> "TrajectoryPool":
        steps = config.sample_steps or sampler_defaults(pipe)[0]
        seeds = [config.seed * 100_003 + i for i in range(len(prompts.texts) * config.pool_seeds)]
        rows = torch.arange(len(prompts.texts)).repeat_interleave(config.pool_seeds)
        parts = []
        with model():
            for start in range(0, len(seeds), chunk):
                embeddings, pooled = prompts.rows(rows[start:start + chunk])
                run = trajectory(pipe, None, seeds[start:start + chunk], steps=steps, keep="all",
                                 guidance=config.sample_guidance, prompt_embeds=embeddings,
                                 pooled_prompt_embeds=pooled)
                parts.append(torch.stack([run.latents[k] for k in range(steps)]))
        return cls(torch.cat(parts, 1), ddim_scheduler(pipe, steps).timesteps, config.pool_seeds)

    def draw(self, generator, batch: int, window: tuple[float, float]):
        prompts = self.latents.shape[1] // self.seeds
        index = torch.randint(prompts, (batch,), generator=generator)
        member = torch.randint(self.seeds, (batch,), generator=generator)
        first, last = window_steps(window, len(self.timesteps))
        k = first + int(torch.randint(last - first, (1,), generator=generator))
        return index, self.latents[k, index * self.seeds + member], self.timesteps[k]


def latent_sampler(pipe, tuning: "FineTuning", prompts: Prompts, config: "FineTuneConfig",
                   window: tuple[float, float] | None = None, model=None):
    """A function of a step's generator giving (prompt indices, x_t, t): from a TrajectoryPool when the config
    asks for one (`pool_seeds`), else a fresh trajectory each call (`draw_noised_latents`). `model` (a context
    manager factory) overrides the config's `sample_model`."""
    if model is None and config.sample_model == "trained":
        model = nullcontext
    if config.pool_seeds:
        pool = TrajectoryPool.sample(pipe, prompts, config, model or tuning.frozen)
        return lambda generator: pool.draw(generator, config.batch_size, window or config.step_window)
    return lambda generator: draw_noised_latents(pipe, tuning, prompts, config, generator, window, model)


def sample_weights(concept: torch.Tensor, empty: torch.Tensor, config: "FineTuneConfig") -> torch.Tensor | None:
    """Per-sample loss weights: with `loss_weighting="guidance"`, 1 / mean (ε(x_t, c) − ε(x_t, ∅))² of the frozen
    model, so that every step of the trajectory counts alike (on ShapeWorld the guidance is 10–25× weaker in the
    last steps, where the shape and style are drawn); None for "none"."""
    if config.loss_weighting == "none":
        return None
    return 1.0 / (concept - empty).float().pow(2).flatten(1).mean(1).clamp_min(1e-8)


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean squared error, each sample's scaled by its weight (plain MSE without weights)."""
    per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
    return per_sample.mean() if weights is None else (per_sample * weights).mean()


def draw_noised_latents(pipe, tuning: FineTuning, prompts: Prompts, config: FineTuneConfig, generator,
                        window: tuple[float, float] | None = None, model=None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt indices, x_t, t): a batch of prompts and seeds, and the frozen model's DDIM trajectory for them
    stopped at a random step in `window` (shares of the steps; default: the config's `step_window`), all drawn from
    the step's generator. `model`: a context manager factory giving the model to sample with (default: the frozen
    one)."""
    steps = config.sample_steps or sampler_defaults(pipe)[0]
    index = torch.randint(len(prompts.texts), (config.batch_size,), generator=generator)
    seeds = torch.randint(0, 2**31 - 1, (config.batch_size,), generator=generator).tolist()
    first, last = window_steps(window or config.step_window, steps)
    k = first + int(torch.randint(last - first, (1,), generator=generator))
    embeddings, pooled = prompts.rows(index)
    with (model or tuning.frozen)():
        x = trajectory(pipe, None, seeds, steps=steps, guidance=config.sample_guidance, stop_at=k,
                       prompt_embeds=embeddings, pooled_prompt_embeds=pooled).final
    return index, x, ddim_scheduler(pipe, steps).timesteps[k]


def run_training(tuning: FineTuning, loss_fn, method: str, config: FineTuneConfig, record: dict):
    """The training loop on the tuning's parameters, resumable in `config.work_dir` (a resume must match the
    method, its settings and `record`)."""
    return train(loss_fn, tuning.parameters, config.training(), folder=config.work_dir or None,
                 record={"method": method, "config": asdict(config), **record}, desc=f"{method}: training")


def finetuned_edit(pipe, deltas: dict, method: str, spec, config, result, **protocol) -> WeightDelta:
    """The WeightDelta of a fine-tuning run (made once the UNet is restored, so its fingerprint is the base's)."""
    losses = result.losses
    summary = {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "train_seconds": round(result.seconds, 2), "resumed_from_step": result.first_step}
    return WeightDelta.create(pipe, deltas, method=method, concepts=spec.targets,
                              config={**asdict(config), "spec": spec.to_dict()}, protocol={**summary, **protocol})


class Preservation:
    """All-but-One's preservation term, shared by the fine-tuners: the trained model's predictions for the
    preserved concepts' prompts and neutral captions (`preserve_prompts`; one drawn per sample) held to the frozen
    model's. x_t is the target's sample (`preserve_latents="target"`) or drawn from the preserved prompts' own
    frozen trajectories ("own", each sample then weighted by its own guidance energy): a change the text does not
    gate (ESD-u trains no cross-attention) must be held where those prompts' images are drawn."""

    def __init__(self, pipe, tuning: FineTuning, prompts: Prompts, config: "FineTuneConfig"):
        self.pipe, self.tuning, self.config, self.prompts = pipe, tuning, config, prompts
        self.draw = None
        if config.preserve_latents == "own":
            own = config if config.preserve_pool_seeds is None else replace(config,
                                                                           pool_seeds=config.preserve_pool_seeds)
            self.draw = latent_sampler(pipe, tuning, prompts, own)

    @classmethod
    def of(cls, pipe, tuning: FineTuning, spec, config: "FineTuneConfig") -> "Preservation | None":
        """The term a method's config asks for (`lam_preserve` > 0) over `preserve_prompts`, else None."""
        if not config.lam_preserve > 0:
            return None
        return cls(pipe, tuning, Prompts.encode(pipe, preserve_prompts(pipe, spec)), config)

    def loss(self, x, t, weights, generator) -> torch.Tensor:
        if self.draw is None:
            index = torch.randint(len(self.prompts.texts), (x.shape[0],), generator=generator)
        else:
            index, x, t = self.draw(generator)
        rows = self.prompts.rows(index)
        with self.tuning.frozen():
            kept = predict(self.pipe, x, t, *rows)
            if self.draw is not None:
                empty = predict(self.pipe, x, t, self.prompts.empty, self.prompts.empty_pooled)
                weights = sample_weights(kept, empty, self.config)
        return weighted_mse(predict(self.pipe, x, t, *rows), kept, weights)


def preserve_prompts(pipe, spec) -> list[str]:
    """What the preservation term holds: the preserved concepts in the training templates, and captions without
    the target (UCE's caption prior: ShapeWorld's scenes, or the built-in neutral list)."""
    return (training_prompts(spec, spec.preserve) if spec.preserve else []) + caption_list(pipe, spec.targets)


def check_weights(config, *names: str) -> None:
    """Refuse a loss term's weight that is negative or not a number (one line, before anything trains)."""
    for name in names:
        value = getattr(config, name)
        if not value >= 0:
            raise ErasekitError(f"{name} must be a number ≥ 0, not {value}")
