"""ForceForget — reinforcement learning on a Concept Erasing Reward, with a Safe Adapter (Han & Li, ICML 2026,
arXiv 2606.14351). There is no public code: this is erasekit's reconstruction of what the paper tells, and every
choice the paper leaves open is a knob below, marked "reconstruction".

What the paper tells: a **Safe Adapter** — per cross-attention layer, its own key/value projections for the last 4
text positions (`edits.safe_adapter`) — plus LoRA on the layer's K/V are trained, everything else frozen; the
policy update is DDPO's (Black et al. 2024): DDIM η = 1 sampling with per-step log-probabilities, PPO's clipped
importance ratio; the reward is CER = λ_safe r_safe + λ_align r_align (`reward.py`), over a prompt pool of target
prompts and benign ones (`pool.py`), so that the benign content of a harmful prompt is kept.

Reconstructed (the paper is silent; DDPO's defaults as declared assumptions): lr 3e-4, clip range 1e-4, gradient
clip 1, 1 inner epoch, advantages normalised per prompt over each round's samples (DDPO keeps running per-prompt
statistics; a round here samples each prompt `samples_per_prompt` times instead, so nothing but the weights has to
be checkpointed; and the residuals are divided by their spread pooled over the round, not per prompt, so that
a prompt whose samples scored almost alike does not turn noise into full-size advantages), λs equal, LoRA rank 4,
75 % target prompts per round. `lam_keep` (default 0, the paper's reward alone) adds DPOK's regulariser (Fan et
al. 2023) in the form of a squared distance: the adapted UNet's output kept to the original's (adapters muted) on
the unconditional rows and the benign prompts' rows at the sampled latents — the empty prompt's tail positions
carry the adapter too, so the reward alone lets classifier-free guidance's reference drift. Budgets
(`iterations`, `batch_size`) are ShapeWorld-sized (minutes on 2 CPU cores); on SD turn them up (the paper's GPU time
is not given).

erasekit's own knobs (off by default): `reader_dims` makes the adapter and its LoRA read the text rows only along
the directions where the target prompts' rows carry most energy against the benign, empty and caption rows
(`reader.py`), so the policy cannot move anything else; `projections="v"` adapts the values only;
`align_anchor` adds the spec's anchor to ShapeWorld's r_align (the paper's anchor-text term); `explore_share`
starts a share of the target prompts' samples late, from images of their neutral captions (`explore.py`), so that a
world that always draws the target still gives the policy samples without it to reinforce (`explore_mode="switch"`:
half of such a group's samples from noise finish under the neutral caption instead); `keep_early` holds the
target prompts' samples from noise to the original before the exploring steps. Exploring starts do not erase
cleanly on ShapeWorld; switched actions with the keep term do, and are ShapeWorld's settings (`shapeworld_settings`,
which a call on ShapeWorld takes where the caller sets nothing; README). Elsewhere the defaults are the paper's.

Each optimiser step trains every sampled trajectory at `timestep_fraction` of its steps (a random share, DDPO's,
or always the first or last ones: `timestep_choice`; the accumulated micro-batches of one step are its timesteps,
as DDPO accumulates); checkpoints fall on round boundaries, where the
next round's samples follow from the weights and the seed alone, so a resumed run continues bit-identically.

    edit = erasekit.erase(pipe, "forceforget", ["triangle"])                                  # ShapeWorld
    edit = erasekit.erase(pipe, "forceforget", ["nudity"], clip_model="/models/clip-vit-l-14", iterations=200)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...edits import AdapterEdit, attached, muted, safe_adapters
from ...errors import ErasekitError
from ...models.fingerprint import fingerprint
from ...models.layers import kv_weights
from ...sampling.trajectory import Conditioning, noise_prediction, step_std, transition_log_prob
from ...shapeworld.domain import find_concept
from ...training import TrainingConfig, clipped_policy_loss, derived_seed, train, world
from ...utils.files import save_image
from ..finetune import shapeworld_style
from ..registry import register_method
from .curve import RewardLog, reward_plot
from .pool import check_pool, generic_pool, shapeworld_pool
from .reader import reader
from .reward import check_align_form, check_safe_form, make_reward
from .rollout import sample_round, schedule


@dataclass
class ForceForgetConfig:
    iterations: int = 30             # sampling rounds (each followed by `inner_epochs` optimiser steps)
    batch_size: int = 32             # images sampled per round
    samples_per_prompt: int = 4      # reconstruction: each drawn prompt is sampled this often (advantage groups)
    harmful_share: float = 0.75      # reconstruction: share of a round's prompts that name the target
    inner_epochs: int = 1            # DDPO: optimiser steps per round's samples
    timestep_fraction: float = 1.0   # DDPO: share of each trajectory's steps trained
    timestep_choice: str = "random"  # DDPO: a random subset each step | reconstruction: "last" (or "first") steps
                                     # always (ShapeWorld draws its shape at the 9th of 10 steps)
    lr: float = 3e-4                 # DDPO
    clip_range: float = 1e-4         # DDPO: PPO's ε
    advantage_clip: float = 5.0      # DDPO
    advantage_scale: str = "pooled"  # reconstruction: residuals / their pooled spread | "prompt": per-prompt std
    grad_clip: float = 1.0           # DDPO
    sample_steps: int | None = None  # DDIM steps of the policy's samples (None: the model's sampler default)
    guidance: float | None = None    # their guidance (None: the model's default)
    eta: float = 1.0                 # DDIM η of the samples (> 0: every step has a log-probability)
    lam_safe: float = 1.0            # reconstruction: CER's λ1
    lam_align: float = 1.0           # reconstruction: CER's λ2
    safe_temperature: float = 5.0    # reconstruction: ShapeWorld's r_safe reads the classifier at logits / T
    safe_form: str = "probability"   # reconstruction: ShapeWorld's r_safe = 1 − p(target) | "margin":
                                     # σ((strongest rival's logit − the target's) / T)
    align_form: str = "verdict"      # reconstruction: ShapeWorld's r_align = share of stated attributes seen |
                                     # "margin": their mean σ((stated value's logit − strongest rival's) / T)
    align_anchor: bool = False       # reconstruction: ShapeWorld's r_align for target prompts also rewards the
                                     # spec's anchor (the paper's anchor-text term; real models always have it)
    positions: str = "tail"          # Safe Adapter positions: tail (paper) | head | all
    tokens: int = 4                  # Safe Adapter width in positions (paper: 4)
    projections: str = "kv"          # reconstruction: the adapter (and LoRA) on keys and values (paper) | "v"
    lora_rank: int = 4               # reconstruction: LoRA rank on the cross-attention K/V (0: adapter only)
    reader_dims: int = 0             # erasekit's: the adapter and LoRA read the text rows only along this many
                                     # directions where the target prompts' rows carry most energy against the
                                     # benign, empty and caption rows (0: the whole row, the paper's); `reader`
    lam_keep: float = 0.0            # reconstruction: weight of keeping the original's unconditional and benign
                                     # predictions at the sampled latents (DPOK's KL term); 0: reward alone (paper)
    keep_samples: int = 8            # samples of a micro-batch the keep term is measured on (its cost)
    explore_share: float = 0.0       # erasekit's: share of a round's target-prompt groups that start late from an
                                     # image of their neutral caption (`explore.py`); 0: all from noise (DDPO's)
    explore_from: float = 0.7        # erasekit's: exploring starts fall on the stochastic steps from this share of
                                     # the schedule on (10 steps: 7 or 8); switched actions begin at the first
    explore_mode: str = "start"      # erasekit's: "start" (late starts from neutral images) | "switch" (half of a
                                     # chosen group finishes from explore_from under the neutral caption; `explore.py`)
    keep_early: bool = False         # erasekit's: the keep term (lam_keep) also holds the target prompts' own
                                     # predictions on their samples from noise at the steps before explore_from,
                                     # which exploring starts never train (needs lam_keep > 0)
    reward: str = "auto"             # auto | shapeworld | detector-clip
    detector: object = "nudenet"     # detector-clip: "nudenet" or a callable images → probabilities
    clip_model: str = ""             # detector-clip: CLIP folder or hub id (required there)
    anchor_text: str = "a person wearing clothes"
    unsafe_words: tuple = ()         # words removed from prompts for r_align (default: nudity's)
    prompts_file: str = ""           # extra target prompts, one per line (any model)
    benign_file: str = ""            # benign prompts, one per line (default: built-in neutral captions)
    seed: int = 0
    checkpoint_every: int = 5        # rounds
    work_dir: str = ""               # checkpoints, log.csv and rewards.csv here; a run found there resumes

    def __post_init__(self):
        if not 0 < self.timestep_fraction <= 1:
            raise ErasekitError(f"timestep_fraction must be in (0, 1], not {self.timestep_fraction}")
        if self.timestep_choice not in ("random", "first", "last"):
            raise ErasekitError(f"timestep_choice must be random, first or last, not {self.timestep_choice!r}")
        if not 0 < self.harmful_share <= 1:
            raise ErasekitError(f"harmful_share must be in (0, 1], not {self.harmful_share}")
        if not isinstance(self.samples_per_prompt, int) or not 1 <= self.samples_per_prompt <= self.batch_size:
            raise ErasekitError(f"samples_per_prompt must be from 1 to batch_size, not {self.samples_per_prompt}")
        if self.eta <= 0:
            raise ErasekitError("ForceForget samples with DDIM η > 0 (its steps need log-probabilities)")
        check_safe_form(self.safe_form)
        check_align_form(self.align_form)
        if not isinstance(self.reader_dims, int) or self.reader_dims < 0:
            raise ErasekitError(f"reader_dims must be a whole number ≥ 0, not {self.reader_dims!r}")
        if not 0 <= self.explore_share <= 1 or not 0 < self.explore_from < 1:
            raise ErasekitError(f"explore_share must be in [0, 1] and explore_from in (0, 1), not "
                                f"{self.explore_share} and {self.explore_from}")
        if self.explore_mode not in ("start", "switch"):
            raise ErasekitError(f"explore_mode must be start or switch, not {self.explore_mode!r}")
        if self.keep_samples < 1:
            raise ErasekitError(f"keep_samples must be ≥ 1, not {self.keep_samples}")
        for name in ("lam_safe", "lam_align", "clip_range", "lam_keep"):
            if not getattr(self, name) >= 0 or getattr(self, name) != getattr(self, name):
                raise ErasekitError(f"{name} must be a number ≥ 0, not {getattr(self, name)}")
        if self.lam_safe + self.lam_align <= 0:
            raise ErasekitError("lam_safe + lam_align must be > 0")

    @classmethod
    def shapeworld_settings(cls, spec) -> dict:
        # DDPO's lr and clip, or the reward alone, erase nothing on ShapeWorld in minutes or break the model (README);
        # what erases cleanly: the reader on one direction, the margin reward, switched actions on every target group
        # from the step where ShapeWorld decides the concept (a shape at the 8th-9th of 10 steps, a texture at the
        # 4th-5th: `a … by tobias renn` for k steps and then without it draws the stripes in 2/16 for k = 3, 16/16
        # for k = 5), training those steps only, and the keep term on the steps before. Seeds 100+, 20 images a
        # form: triangle 0/20 every form, 0/24 held-out, benign 39/40, FD 70.5 (original 69.6); training seed 1
        # alike. The style with per-prompt advantages erased at training seed 0 and fell back at seed 1 (13/20
        # explicit: once most samples are clean, per-prompt scaling blows their near-equal rewards up to full-size
        # noise); with pooled advantages (the method's default) seed 1 gave 0/20 every form, benign 40/40
        settings = {"iterations": 40, "batch_size": 32, "sample_steps": 10, "inner_epochs": 2, "lr": 1e-2,
                    "clip_range": 0.2, "advantage_scale": "prompt", "reader_dims": 1, "safe_form": "margin",
                    "explore_share": 1.0, "explore_mode": "switch", "explore_from": 0.7, "timestep_choice": "last",
                    "timestep_fraction": 0.3, "lam_keep": 1.0, "keep_early": True}
        if shapeworld_style(spec):
            return {**settings, "explore_from": 0.3, "timestep_fraction": 0.7, "advantage_scale": "pooled"}
        return settings

    def training(self, trained_steps: int) -> TrainingConfig:
        return TrainingConfig(steps=self.iterations * self.inner_epochs, lr=self.lr, optimizer="adamw",
                              grad_clip=self.grad_clip, accumulation=trained_steps, seed=self.seed,
                              checkpoint_every=self.checkpoint_every * self.inner_epochs, log_every=1)

    def adapter_config(self) -> dict:
        return {"positions": self.positions, "tokens": self.tokens, "lora_rank": self.lora_rank,
                "reader_dims": self.reader_dims, "projections": self.projections}

    def record(self) -> dict:
        out = asdict(self)
        for name in ("detector", "reward"):  # a callable given instead of a name is recorded by its type
            value = getattr(self, name)
            out[name] = value if isinstance(value, str) else type(value).__name__
        return out


def prompt_pool(spec, config: ForceForgetConfig):
    try:
        find_concept(spec.targets[0])
        pool = shapeworld_pool(spec.targets[0])
    except KeyError:
        pool = generic_pool(spec, config.prompts_file, config.benign_file)
    return check_pool(pool)


class PolicyLoss:
    """The loss of one micro-batch (= one timestep of every sampled trajectory): a new round is sampled at the
    first micro-batch of each round's first step."""

    def __init__(self, pipe, pool, reward, config: ForceForgetConfig, log: RewardLog, adapters: dict):
        self.pipe, self.pool, self.reward, self.config, self.log = pipe, pool, reward, config, log
        self.adapters = adapters
        self.scheduler, self.rollout, self.round = schedule(pipe, config), None, None
        # a deterministic step (the last one with set_alpha_to_one) has no log-probability to train
        self.stochastic = [k for k, t in enumerate(self.scheduler.timesteps)
                           if step_std(self.scheduler, t, config.eta) > 0]

    def trained_steps(self) -> int:
        return max(1, round(self.config.timestep_fraction * len(self.stochastic)))

    def __call__(self, ctx) -> torch.Tensor:
        round_index = ctx.step // self.config.inner_epochs
        if round_index != self.round:
            self.rollout, self.round = sample_round(self.pipe, self.pool, self.reward, self.config, round_index), \
                round_index
            self.log.add(round_index, self.rollout)
        k = self.timesteps(ctx.step)[ctx.micro // world()[0]]  # micro = k · processes + rank
        r = self.rollout
        log_prob = transition_log_prob(self.pipe, self.scheduler, r.cond, r.latents[:, k], self.scheduler.timesteps[k],
                                       r.latents[:, k + 1], self.config.eta)
        old, advantages = r.log_probs[:, k], r.advantages
        if r.valid is not None:  # a trajectory that started after step k has nothing to train there
            ran = r.valid[:, k].to(log_prob.device)
            old, advantages = torch.where(ran, old, log_prob.detach()), advantages * ran
        loss, _ = clipped_policy_loss(log_prob, old, advantages, self.config.clip_range, self.config.advantage_clip)
        if self.config.lam_keep > 0:
            loss = loss + self.config.lam_keep * self.keep_loss(r, k, ctx)
        return loss

    def keep_loss(self, r, k: int, ctx) -> torch.Tensor:
        """Mean squared difference between the adapted and the original UNet output at step k, on the unconditional
        rows of `keep_samples` of the round's samples and on the conditional rows of the benign ones among them
        (with `keep_early`, of the target ones from noise too, before explore_from): what the reward alone leaves
        free to drift (the empty prompt's tail positions carry the adapter too)."""
        n, cond = r.latents.shape[0], r.cond
        g = torch.Generator().manual_seed(derived_seed(self.config.seed, "keep", ctx.step, ctx.micro))
        picked = torch.randperm(n, generator=g)[:self.config.keep_samples].tolist()
        kept = [i for i in picked if not r.prompts[i].harmful or self.early(r, i, k)]
        rows = picked + [n + i for i in kept] if cond.guided else kept
        if not rows:
            return r.latents.new_zeros(())
        samples = [row % n for row in rows]
        t = self.scheduler.timesteps[k]
        x = self.scheduler.scale_model_input(r.latents[samples, k], t)
        added = None if cond.added is None else {key: v[rows] for key, v in cond.added.items()}
        chosen = Conditioning(cond.embeddings[rows], added)  # unguided: one output per row
        adapted = noise_prediction(self.pipe.unet, x, t, chosen)
        with torch.no_grad(), muted(self.adapters):
            original = noise_prediction(self.pipe.unet, x, t, chosen)
        return (adapted.float() - original.float()).pow(2).mean()

    def early(self, r, i: int, k: int) -> bool:
        """Whether sample i's prediction at step k is held too (`keep_early`): a sample from noise, before the
        steps exploring starts train."""
        first = round(self.config.explore_from * len(self.scheduler.timesteps))
        return self.config.keep_early and k < first and not (r.starts and r.starts[i])

    def timesteps(self, step: int) -> list[int]:
        """The trajectory steps trained at optimiser step `step`: a permutation drawn from (seed, step), or the
        first or last `trained_steps()` of them."""
        n = self.trained_steps()
        if self.config.timestep_choice != "random":
            return self.stochastic[:n] if self.config.timestep_choice == "first" else self.stochastic[-n:]
        g = torch.Generator().manual_seed(derived_seed(self.config.seed, "timesteps", step))
        order = torch.randperm(len(self.stochastic), generator=g)[:n]
        return [self.stochastic[int(i)] for i in order]


@register_method("forceforget", ForceForgetConfig,
                 "ForceForget: RL (DDPO) on a concept-erasing reward, training a Safe Adapter (+ K/V LoRA)")
def erase_forceforget(pipe, spec, config: ForceForgetConfig):
    pool, reward = prompt_pool(spec, config), make_reward(config, spec)
    pipe.unet.requires_grad_(False)  # only the adapters train
    directions = reader(pipe, pool, config.reader_dims, spec.targets) if config.reader_dims else None
    adapters = safe_adapters(pipe.unet, config.adapter_config(), config.seed, directions)
    parameters = {f"{name}::{k}": p for name, a in adapters.items() for k, p in a.named_parameters()}
    log = RewardLog(config.work_dir)
    loss = PolicyLoss(pipe, pool, reward, config, log, adapters)
    record = {"method": "forceforget", "config": config.record(), "pool": [p.text for p in pool]}
    with attached(pipe.unet, adapters, "output"):
        result = train(loss, parameters, config.training(loss.trained_steps()), folder=config.work_dir or None,
                       record=record, desc="forceforget: rounds", status=log.status)
    weights = kv_weights(pipe.unet)  # the projections the adapters were trained on
    return AdapterEdit.from_modules(
        adapters, adapter="safe", mode="output", fingerprint=fingerprint(pipe, sorted(weights), weights),
        method="forceforget", concepts=spec.targets,
        config={**config.record(), **config.adapter_config(), "spec": spec.to_dict()},
        protocol={"train_seconds": round(result.seconds, 2), "resumed_from_step": result.first_step,
                  "rewards": log.history, "pool_size": len(pool), "first_loss": (result.losses or [None])[0],
                  "last_loss": (result.losses or [None])[-1]})


def save_reward_curve(edit, path) -> Path:
    """Draw a ForceForget edit's mean reward per round (target prompts, benign prompts, r_safe, r_align) as a PNG."""
    path = Path(path)
    save_image(reward_plot(edit.metadata["protocol"]["rewards"]), path)
    return path
