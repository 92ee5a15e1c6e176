"""Critic updates per second: heads on cached VLM features vs the reference design's critic.

Baseline ("reference design", as in the Digi-Q reference code): three roberta-base-sized text
encoders (``RobertaModel`` built from ``RobertaConfig()``, random init; one for the goal, one for
action types, one for typed texts) are trained and run at every step: five passes (goal, previous
action types, previous typed texts, action type, action text), whose pooled outputs join cached image
features (2 x 1408) and the VLM state-action feature (4096) as inputs of MLP heads of the
reference's sizes (Q 10752->4096->4096->1 x2, V 5120->4096->4096->1 x2). Targets are Polyak copies
of encoders and heads; they encode s' (three passes) for Vbar(s') and (s, a) (five passes) for
Qbar(s, a), without grad. Ours: the same TD update on features already cached in the dataset, so
only the heads run.

Three comparisons, all against that baseline, in one run on the same machine, alternating ours and
the baseline inside each repeat; each prints one JSON line with the median ratio:

1. ``"heads": "default"``: ours with the default ``DigiQCriticModelConfig`` heads (4096->1024->1024->1).
2. ``"heads": "default+text"``: the same with the critic's trainable text encoder in, as the pipeline
   trains it by default (a small BERT, the goal + previous action + action read in one joint sequence
   of ``--seq-len`` tokens for Q and one for V, the token-by-token match of typed text and goal, and a
   Polyak target copy of the encoder that reads s' and (s, a) without grad).
3. ``"heads": "reference"``: ours with the reference's head sizes, the equal-size comparison (last line).

Texts are 16 tokens each (short AitW goals and action strings; the reference pads to the longest in
the batch). Data loading is excluded from both sides. Runs in about 3 minutes with 1 thread on an idle
machine; other work distorts the numbers, so the JSON records the load average at the start and end.

Usage: ``python benchmarks/critic_throughput.py [--repeats 3] [--threads 1]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import RobertaConfig, RobertaModel

from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig, Text, tiny_text_encoder_config
from digiq_trl.targets import polyak_update, td_targets, v_targets


REFERENCE_HEADS = dict(q_input_dim=10752, v_input_dim=5120, hidden_size=4096, num_hidden_layers=2)
STATE_TEXTS = ("goal", "previous_types", "previous_texts")
ACTION_TEXTS = ("action_type", "action_text")
ENCODER_OF = {"goal": 0, "previous_types": 1, "action_type": 1, "previous_texts": 2, "action_text": 2}
GAMMA, TAU, LR, MAX_GRAD_NORM = 0.95, 0.1, 1e-5, 0.01


@dataclass
class Batch:
    """One batch of cached inputs: full feature vectors, plus token ids for the baseline."""

    q_features: torch.Tensor
    v_features: torch.Tensor
    next_v_features: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor
    tokens: dict[str, torch.Tensor]
    next_tokens: dict[str, torch.Tensor]


def make_batch(config: DigiQCriticModelConfig, batch_size: int, seq_len: int, vocab: int) -> Batch:
    """Random features of the critic's widths, rewards, dones and token ids of every text."""
    def ids(names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {name: torch.randint(5, vocab, (batch_size, seq_len)) for name in names}

    return Batch(
        q_features=torch.randn(batch_size, config.q_input_dim),
        v_features=torch.randn(batch_size, config.v_input_dim),
        next_v_features=torch.randn(batch_size, config.v_input_dim),
        reward=(torch.rand(batch_size) < 0.2).float(),
        done=torch.rand(batch_size) < 0.2,
        tokens=ids(STATE_TEXTS + ACTION_TEXTS),
        next_tokens=ids(STATE_TEXTS),
    )


def critic_texts(batch_size: int, seq_len: int, vocab: int) -> dict[str, Text]:
    """Random token ids of the text critic's inputs: Q and V sequences of ``seq_len`` tokens, and the
    goal / typed-text pairs of the match features."""
    def text() -> Text:
        return {"input_ids": torch.randint(5, vocab, (batch_size, 1, seq_len)),
                "attention_mask": torch.ones(batch_size, 1, seq_len, dtype=torch.long),
                "match_ids": torch.randint(5, vocab, (batch_size, 2, seq_len)),
                "match_mask": torch.ones(batch_size, 2, seq_len, dtype=torch.long)}

    return {"q": text(), "v": text(), "next_v": text()}


def td_loss(critic: DigiQCritic, q_features: torch.Tensor, v_features: torch.Tensor,
            target_q_features: torch.Tensor, next_v_features: torch.Tensor, batch: Batch,
            texts: dict[str, Text] | None = None) -> torch.Tensor:
    """The trainer's double-Q / double-V TD loss (same math as ``DigiQCriticTrainer.compute_loss``)."""
    texts = texts or {}
    state = v_features if texts else None
    q1, q2 = critic.q_values(q_features, state, texts.get("q"))
    v1, v2 = critic.v_values(v_features, texts.get("v"))
    next_v1, next_v2 = critic.target_v_values(next_v_features, texts.get("next_v"))
    q_targets = td_targets(batch.reward, batch.done, next_v1, next_v2, GAMMA)
    v_target = v_targets(*critic.target_q_values(target_q_features, state, texts.get("q")), "min")
    mse = nn.functional.mse_loss
    return mse(q1, q_targets[0]) + mse(q2, q_targets[1]) + mse(v1, v_target[0]) + mse(v2, v_target[1])


def apply_update(loss: torch.Tensor, params: list[nn.Parameter], optimizers: list[torch.optim.Optimizer]) -> None:
    """Backward, clip, step, zero: one optimizer step."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


class CachedCritic:
    """Ours: the heads on cached features."""

    def __init__(self, critic: DigiQCritic, texts: dict[str, Text] | None = None) -> None:
        self.critic = critic
        self.texts = texts
        self.params = [p for p in critic.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=LR)

    def step(self, batch: Batch) -> None:
        loss = td_loss(self.critic, batch.q_features, batch.v_features, batch.q_features,
                       batch.next_v_features, batch, self.texts)
        apply_update(loss, self.params, [self.optimizer])
        self.critic.update_targets(TAU)


def encode(encoders: nn.ModuleList, tokens: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
    """Pooled outputs of the named texts, each through its encoder, concatenated."""
    return torch.cat([encoders[ENCODER_OF[name]](input_ids=tokens[name]).pooler_output for name in names], -1)


class ReferenceCritic:
    """Baseline: three trained text encoders (five passes) feed the same heads every step.

    It shares the head modules and their optimizer with a ``CachedCritic`` (timing is unaffected;
    memory is saved).
    """

    def __init__(self, heads: CachedCritic, encoders: nn.ModuleList) -> None:
        self.heads = heads
        self.encoders = encoders
        self.target_encoders = copy.deepcopy(encoders).requires_grad_(False).eval()
        self.params = heads.params + list(encoders.parameters())
        self.optimizer = torch.optim.Adam(encoders.parameters(), lr=LR)

    def _features(self, encoders: nn.ModuleList, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        state_text = encode(encoders, batch.tokens, STATE_TEXTS)
        action_text = encode(encoders, batch.tokens, ACTION_TEXTS)
        width = state_text.shape[-1]
        image = batch.v_features[:, width:]
        q_rep = batch.q_features[:, width + image.shape[-1] + action_text.shape[-1]:]
        return torch.cat([state_text, image, action_text, q_rep], -1), torch.cat([state_text, image], -1)

    def step(self, batch: Batch) -> None:
        q_features, v_features = self._features(self.encoders, batch)
        with torch.no_grad():
            target_q_features, _ = self._features(self.target_encoders, batch)
            next_text = encode(self.target_encoders, batch.next_tokens, STATE_TEXTS)
            next_v_features = torch.cat([next_text, batch.next_v_features[:, next_text.shape[-1]:]], -1)
        loss = td_loss(self.heads.critic, q_features, v_features, target_q_features, next_v_features, batch)
        apply_update(loss, self.params, [self.heads.optimizer, self.optimizer])
        self.heads.critic.update_targets(TAU)
        polyak_update(self.target_encoders, self.encoders, TAU)


def updates_per_second(step: Callable[[Batch], None], batch: Batch, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    return steps / (time.perf_counter() - start)


def summary(name: str, ours: list[float], baseline: list[float], args: argparse.Namespace,
            load: tuple[float, float]) -> dict:
    ratios = [o / b for o, b in zip(ours, baseline)]
    return {
        "benchmark": "critic_throughput", "heads": name, "baseline_heads": "reference",
        "ours": round(statistics.median(ours), 3), "baseline": round(statistics.median(baseline), 4),
        "unit": "updates/s", "ratio": round(statistics.median(ratios), 1),
        "ratios": [round(r, 1) for r in ratios], "batch_size": args.batch_size, "seq_len": args.seq_len,
        "threads": args.threads, "repeats": args.repeats,
        "loadavg_1min_start": load[0], "loadavg_1min_end": load[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--seq-len", type=int, default=64,
        help="tokens of each of the five texts (the reference's observation text holds the goal and "
        "all previous AutoUI actions, often longer than 64 tokens; 16 gives a lower bound)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ours-steps", type=int, default=3, help="timed updates of ours per repeat")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]

    encoder_config = RobertaConfig()
    encoders = nn.ModuleList([RobertaModel(encoder_config) for _ in range(3)])
    encoders.train()
    reference_config = DigiQCriticModelConfig(**REFERENCE_HEADS)
    default_config = DigiQCriticModelConfig()
    text_vocab = 600  # the shipped tiny actor's tokenizer, which the default text encoder reuses
    text_config = DigiQCriticModelConfig(text_encoder_config=tiny_text_encoder_config(text_vocab), text_match=True)
    ours_reference = CachedCritic(DigiQCritic(reference_config).train())
    ours_default = CachedCritic(DigiQCritic(default_config).train())
    ours_text = CachedCritic(DigiQCritic(text_config).train(), critic_texts(args.batch_size, args.seq_len, text_vocab))
    baseline = ReferenceCritic(ours_reference, encoders)
    reference_batch = make_batch(reference_config, args.batch_size, args.seq_len, encoder_config.vocab_size)
    default_batch = make_batch(default_config, args.batch_size, args.seq_len, encoder_config.vocab_size)

    with torch.enable_grad():
        for runner, batch in ((ours_reference, reference_batch), (ours_default, default_batch),
                              (ours_text, default_batch), (baseline, reference_batch)):
            runner.step(batch)
        rates: dict[str, list[float]] = {"reference": [], "default": [], "default+text": [], "baseline": []}
        for _ in range(args.repeats):
            rates["reference"].append(updates_per_second(ours_reference.step, reference_batch, args.ours_steps))
            rates["baseline"].append(updates_per_second(baseline.step, reference_batch, 1))
            rates["default"].append(updates_per_second(ours_default.step, default_batch, 10 * args.ours_steps))
            rates["default+text"].append(updates_per_second(ours_text.step, default_batch, 3 * args.ours_steps))

    load = (load_start, os.getloadavg()[0])
    print(json.dumps(summary("default", rates["default"], rates["baseline"], args, load)))
    print(json.dumps(summary("default+text", rates["default+text"], rates["baseline"], args, load)))
    print(json.dumps(summary("reference", rates["reference"], rates["baseline"], args, load)))


if __name__ == "__main__":
    main()
