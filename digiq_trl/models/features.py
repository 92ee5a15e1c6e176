"""Frozen-VLM features for the critic: V(s) inputs and Q(s, a) inputs from a chosen decoder layer.

Digi-Q (stage 2) freezes a vision-language model and trains small critic heads on its hidden
states. This module computes those hidden states once:

* **state feature** ``v``: the hidden state, at the chosen layer, of the last prompt token, where
  the prompt is :func:`digiq_trl.prompts.render_prompt` (screenshot + goal + history, generation
  prompt added). It sees the whole state and nothing of any action.
* **state-action feature** ``q``, from one of two inputs (``feature_input``):

  - ``"actor_prompt"``: the chosen layer's hidden states over the *answer tokens* appended after
    that prompt, pooled (``"mean"`` or ``"last"``). The answer tokens are exactly what the full
    conversation (:func:`~digiq_trl.prompts.build_messages` with the action) renders after the
    prompt: the action text followed by the chat template's end-of-turn marker (``<|im_end|>`` for
    ChatML), without the whitespace the template puts after that marker. So ``"last"`` pooling reads
    the end-of-turn token, which has attended to the whole action.
  - ``"actionability"`` (the reference's): the *stage-1 input* (:mod:`digiq_trl.representation`: the
    screenshot with the action drawn on it, the action and the question "will this action change
    the screen?"); the VLM answers greedily, and the feature is the mean of the chosen layer's
    hidden states over the answer tokens it generated (the positions where they are fed back, as the
    reference's ``host.py`` reads them; the last prompt token when the answer is a bare end of turn).
    This reads exactly what representation fine-tuning trained. Each candidate has its own marked
    screenshot, so nothing is shared between candidates; candidates run in batches.

Layers are numbered like ``output_hidden_states``: layer ``k`` (1-based) is the output of the k-th
decoder layer, before any final norm; the default is the middle layer, as in the paper. Only the
first ``k`` decoder layers run.

The N candidate actions of one state share the screenshot and the prompt. For Qwen2-VL, Qwen2.5-VL
and Qwen3-VL the prompt runs once with a KV cache, the cache is repeated for the candidates, and only the short
answers run, batched ("prefix sharing"); other families run one full forward per candidate (batched)
and give the same numbers more slowly.

Example:
    >>> from digiq_trl.models.features import VLMFeatureExtractor
    >>> from digiq_trl.models.tiny import tiny_qwen2_vl
    >>> extractor = VLMFeatureExtractor(*tiny_qwen2_vl())
    >>> extractor.provenance["layer"]
    1
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, DynamicCache

from ..prompts import FEATURE_INPUTS, PROMPT_TEMPLATE_ID, answer_token_ids, render_prompt
from .vlm import choose_prefix_sharing, decoder_layers, unwrap_peft, weights_digest


if TYPE_CHECKING:
    from .critic import DigiQCriticModelConfig

Pooling = Literal["mean", "last"]
POOLINGS: tuple[str, ...] = ("mean", "last")
MAX_ANSWER_TOKENS = 4
"""Most tokens the VLM generates to answer the actionability question (``Yes`` and an end of turn)."""


class VLMFeatureExtractor:
    """Frozen VLM hidden states as critic inputs (state features and state-action features).

    Args:
        model: a VLM that ``AutoModelForImageTextToText`` loads (or a peft model wrapping one).
            It is used in eval mode under ``torch.no_grad``; its training mode is restored after
            each call.
        processor: the model's processor; its chat template must render
            :func:`digiq_trl.prompts.build_messages`.
        layer: decoder layer whose output is the feature, 1-based (``hidden_states[layer]``);
            negative counts from the end (``-1``: the last layer, as the reference's ``host.py``);
            default ``num_layers // 2``, the middle layer (the paper's text).
        pooling: how the answer tokens' hidden states become one vector: ``"mean"`` over all of
            them or the ``"last"`` one (the end-of-turn token).
        prefix_sharing: reuse the prompt's KV cache for the candidate actions of a state. ``None``
            picks it for the families in :data:`~digiq_trl.models.vlm.PREFIX_SHARING_MODEL_TYPES`
            where the installed transformers has what it reads
            (:func:`~digiq_trl.models.vlm.prefix_sharing_unavailable`); ``False`` forces one full
            forward per candidate.
        candidate_batch_size: most candidate answers run in one forward (bounds memory for
            large N).
        model_id: the model's Hub id or path, for :attr:`provenance` (default: the config's
            ``name_or_path``).
        revision: the model's revision, for :attr:`provenance`.
        adapter: the peft adapter's Hub id or path, for :attr:`provenance`.
        adapter_revision: the adapter's revision, for :attr:`provenance`.
        feature_input: ``"actor_prompt"`` or ``"actionability"`` (see the module docstring).

    During a call the text decoder's layer list is temporarily cut to ``layer`` layers, so the
    model must not be used by another thread at the same time.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        layer: int | None = None,
        pooling: Pooling = "mean",
        prefix_sharing: bool | None = None,
        candidate_batch_size: int = 16,
        model_id: str | None = None,
        revision: str | None = None,
        adapter: str | None = None,
        adapter_revision: str | None = None,
        feature_input: str = "actor_prompt",
    ) -> None:
        if feature_input not in FEATURE_INPUTS:
            raise ValueError(f"feature_input must be one of {FEATURE_INPUTS}, got {feature_input!r}")
        self.feature_input = feature_input
        self.model = model
        self.processor = processor
        self._base = unwrap_peft(model)
        self._decoder, self._layers = decoder_layers(self._base)
        num_layers = len(self._layers)
        self.layer = num_layers // 2 if layer is None else layer + num_layers + 1 if layer < 0 else layer
        if not 1 <= self.layer <= num_layers:
            raise ValueError(f"layer must be in [1, {num_layers}] or [-{num_layers}, -1] for this model, got {layer}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.prefix_sharing = choose_prefix_sharing(model, prefix_sharing, "full forwards")
        if candidate_batch_size < 1:
            raise ValueError(f"candidate_batch_size must be >= 1, got {candidate_batch_size}")
        self.candidate_batch_size = candidate_batch_size
        self._model_id = model_id if model_id is not None else self._base.config.name_or_path
        self._revision = revision
        self._adapter = adapter
        self._adapter_revision = adapter_revision

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        adapter: str | None = None,
        layer: int | None = None,
        pooling: Pooling = "mean",
        revision: str | None = None,
        adapter_revision: str | None = None,
        processor: Any = None,
        dtype: torch.dtype | str = "auto",
        **kwargs: Any,
    ) -> VLMFeatureExtractor:
        """Load a VLM (and optionally a peft adapter, merged into it) by Hub id or path.

        Args:
            name_or_path: the base model's Hub id or local directory.
            adapter: a peft adapter (Hub id or directory) trained on that model, merged after loading.
            layer: see the class.
            pooling: see the class.
            revision: the base model's revision (branch, tag or commit).
            adapter_revision: the adapter's revision.
            processor: a processor to use instead of loading one from ``name_or_path``.
            dtype: weights dtype passed to ``from_pretrained``.
            **kwargs: passed to the class (``prefix_sharing``, ``candidate_batch_size``).
        """
        from .pretrained import resolve_pretrained
        from .processing import load_processor

        model = AutoModelForImageTextToText.from_pretrained(resolve_pretrained(name_or_path), revision=revision,
                                                            dtype=dtype)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter, revision=adapter_revision).merge_and_unload()
        if processor is None:
            processor = load_processor(name_or_path, revision=revision)
        return cls(
            model, processor, layer=layer, pooling=pooling, model_id=name_or_path,
            revision=revision, adapter=adapter, adapter_revision=adapter_revision, **kwargs,
        )

    @classmethod
    def for_critic(
        cls,
        critic_config: DigiQCriticModelConfig,
        backbone: str | Path | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> VLMFeatureExtractor:
        """The frozen VLM whose features a critic reads, rebuilt from what its config records
        (model, revision, adapter, layer, pooling), and checked against the recorded weights digest
        and prompt template: features of other weights or another prompt would make the critic's
        values meaningless.

        Args:
            critic_config: the critic's :class:`~digiq_trl.models.critic.DigiQCriticModelConfig`.
            backbone: a copy of the backbone to load instead of the recorded ``backbone_model_id``
                (e.g. a run's ``representation/`` after the run folder moved); the recorded
                revision does not apply to it. A recorded ``../name`` (how a pipeline run records
                the backbone saved beside its critic) is resolved against the folder the critic
                was loaded from.
            device: where the model goes; default: the GPU when there is one, else the CPU.
            **kwargs: passed to :meth:`from_pretrained` (``processor``, ``dtype``,
                ``candidate_batch_size``, ...).

        Raises:
            ValueError: the config names no backbone and none is given, or the loaded weights or
                the prompt template differ from those the critic was trained on.
        """
        model_id = str(backbone) if backbone is not None else _resolve_sibling(critic_config)
        if not model_id:
            raise ValueError("the critic's config names no backbone_model_id: pass the feature backbone explicitly")
        recorded_template = critic_config.prompt_template_id
        if recorded_template and recorded_template != PROMPT_TEMPLATE_ID:
            raise ValueError(
                f"the critic was trained on features of prompt template {recorded_template!r}, this digiq-trl "
                f"renders {PROMPT_TEMPLATE_ID!r}: use the digiq-trl version that trained it"
            )
        extractor = cls.from_pretrained(
            model_id, adapter=critic_config.backbone_adapter, layer=critic_config.feature_layer,
            pooling=critic_config.feature_pooling or "mean",
            feature_input=critic_config.feature_input or "actor_prompt",
            revision=critic_config.backbone_revision if backbone is None else None, **kwargs,
        )
        digest, recorded = weights_digest(extractor.model), critic_config.backbone_weights_digest
        if recorded and digest != recorded:
            raise ValueError(
                f"the backbone {model_id!r} has weights digest {digest}, the critic was trained on features of "
                f"weights {recorded}: pass the backbone it was trained with"
            )
        extractor.model.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        return extractor

    @property
    def hidden_size(self) -> int:
        """Dimension of every feature vector."""
        return self._base.config.get_text_config().hidden_size

    @property
    def provenance(self) -> dict[str, Any]:
        """What rebuilds these features: model id, revision, adapter, weights digest (of the weights
        now), layer, pooling and prompt template. Critics record it; ``cache_features`` keys its
        cache with it."""
        return {
            "model_id": self._model_id,
            "revision": self._revision,
            "adapter": self._adapter,
            "adapter_revision": self._adapter_revision,
            "weights_digest": weights_digest(self.model),
            "layer": self.layer,
            "pooling": self.pooling,
            "prompt_template_id": PROMPT_TEMPLATE_ID,
            "feature_input": self.feature_input,
            "hidden_size": self.hidden_size,
        }

    def state_features(
        self, images: Sequence[Image.Image], goals: Sequence[str], histories: Sequence[str]
    ) -> torch.Tensor:
        """``[B, D]`` float32: the chosen layer's hidden state at each state's last prompt token."""
        _check_lengths(images=images, goals=goals, histories=histories)
        prompts = [render_prompt(self.processor, g, h) for g, h in zip(goals, histories)]
        inputs = self.processor(
            text=prompts, images=list(images), padding=True, padding_side="right", return_tensors="pt"
        )
        with self._inference():
            hidden = self._hidden(inputs)
        last = inputs["attention_mask"].sum(dim=1) - 1
        return hidden[torch.arange(len(prompts)), last.to(hidden.device)].float().cpu()

    def action_features(
        self,
        images: Sequence[Image.Image],
        goals: Sequence[str],
        histories: Sequence[str],
        actions: Sequence[Sequence[str]],
    ) -> list[torch.Tensor]:
        """One ``[N_i, D]`` float32 tensor per state: the pooled answer features of its actions."""
        return self.state_action_features(images, goals, histories, actions)[1]

    def state_action_features(
        self,
        images: Sequence[Image.Image],
        goals: Sequence[str],
        histories: Sequence[str],
        actions: Sequence[Sequence[str]],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """State features ``[B, D]`` and action features (``[N_i, D]`` per state), both from one
        prompt forward per state.

        Args:
            images: one screenshot per state.
            goals: one goal per state.
            histories: one history text per state.
            actions: per state, the AutoUI action strings to embed (at least one).
        """
        _check_lengths(images=images, goals=goals, histories=histories, actions=actions)
        for goal, state_actions in zip(goals, actions):
            if len(state_actions) == 0:
                raise ValueError(f"no actions given for the state with goal {goal!r}")
        if self.feature_input == "actionability":
            return self.state_features(images, goals, histories), self._actionability_features(
                images, goals, histories, actions)
        states, candidates = [], []
        with self._inference():
            for image, goal, history, state_actions in zip(images, goals, histories, actions):
                answers = [self.answer_ids(goal, history, a) for a in state_actions]
                prompt = render_prompt(self.processor, goal, history)
                inputs = self.processor(text=[prompt], images=[image], return_tensors="pt")
                run = self._shared_prefix if self.prefix_sharing else self._full_forwards
                state, pooled = run(inputs, answers)
                states.append(state)
                candidates.append(pooled)
        return torch.stack(states), candidates

    def answer_ids(self, goal: str, history: str, action: str) -> list[int]:
        """The answer tokens of ``action`` (:func:`digiq_trl.prompts.answer_token_ids`), non-empty."""
        ids = answer_token_ids(self.processor, goal, history, action)
        if not ids:
            raise ValueError(f"action {action!r} renders to no answer tokens")
        return ids

    def _actionability_features(
        self, images: Sequence[Image.Image], goals: Sequence[str], histories: Sequence[str],
        actions: Sequence[Sequence[str]],
    ) -> list[torch.Tensor]:
        """Per state, ``[N_i, D]``: the answer features of the stage-1 input of each action."""
        from ..representation import actionability_prompt

        rows = [(image, goal, history, action) for image, goal, history, state_actions
                in zip(images, goals, histories, actions) for action in state_actions]
        pooled = []
        with self._inference(all_layers=True):
            for start in range(0, len(rows), self.candidate_batch_size):
                chunk = rows[start : start + self.candidate_batch_size]
                marked, prompts = zip(*(actionability_prompt(self.processor, *row) for row in chunk))
                pooled.append(self._answer_features(list(marked), list(prompts)))
        return list(torch.cat(pooled).split([len(a) for a in actions]))

    def _answer_features(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        """``[B, D]``: greedy answers to left-padded prompts; the chosen layer's states over the
        generated tokens fed back (all but the last), averaged; the last prompt token where the
        answer is a bare end of turn."""
        inputs = self.processor(text=prompts, images=images, padding=True, padding_side="left", return_tensors="pt")
        captured: list[torch.Tensor] = []
        handle = self._layers[self.layer - 1].register_forward_hook(
            lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output))
        device = self._base.device
        try:
            out = self._base.generate(
                **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()},
                max_new_tokens=MAX_ANSWER_TOKENS, do_sample=False, return_dict_in_generate=True,
            )
        finally:
            handle.remove()
        answers = out.sequences[:, inputs["input_ids"].shape[1]:].cpu()
        fed = _fed_answer_mask(answers, self._base.generation_config.eos_token_id)
        steps = [hidden[:, -1].float().cpu() for hidden in captured]  # step 0: the last prompt token
        stacked = torch.stack(steps[1 : 1 + fed.shape[1]], dim=1) if fed.shape[1] else None
        counts = fed.sum(dim=1, keepdim=True)
        mean = (stacked * fed[..., None]).sum(1) / counts.clamp(min=1) if stacked is not None else steps[0]
        return torch.where(counts > 0, mean, steps[0])

    @contextlib.contextmanager
    def _inference(self, all_layers: bool = False) -> Iterator[None]:
        """Eval mode, no grad, and (unless ``all_layers``) only the first ``layer`` decoder layers;
        all restored after."""
        was_training = self.model.training
        layers = self._layers
        self.model.eval()
        if not all_layers:
            self._decoder.layers = torch.nn.ModuleList(layers[: self.layer])
        try:
            with torch.no_grad():
                yield
        finally:
            self._decoder.layers = layers
            self.model.train(was_training)

    def _hidden(self, inputs: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """Output of the last kept decoder layer, ``[B, L, D]`` on the model's device (captured
        before the final norm). Tensors in ``inputs`` and ``kwargs`` move to that device."""
        captured: list[torch.Tensor] = []

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)

        handle = self._layers[self.layer - 1].register_forward_hook(hook)
        device = self._base.device
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in {**inputs, **kwargs}.items()}
        try:
            self._base.base_model(**moved)
        finally:
            handle.remove()
        return captured[-1]

    def _pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pool ``[N, L, D]`` answer hidden states over each row's first ``lengths[i]`` tokens;
        float32 on the CPU."""
        hidden, lengths = hidden.float(), lengths.to(hidden.device)
        if self.pooling == "last":
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        else:
            mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
            pooled = (hidden * mask[..., None]).sum(dim=1) / lengths[:, None]
        return pooled.cpu()

    def _shared_prefix(
        self, inputs: dict[str, torch.Tensor], answers: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Qwen-VL families: run the prompt once into a KV cache, then the answers in batches on copies of it.

        Answers are right-padded, so causal attention keeps padding out of real tokens without a
        mask. Their 3-D M-RoPE positions continue the prompt's text positions (``rope_deltas``).
        """
        backbone = self._base.base_model
        positions, rope_deltas = backbone.get_rope_index(
            inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
        cache = DynamicCache(config=self._base.config.get_text_config())
        prefix = self._hidden(inputs, position_ids=positions, cache=cache, use_cache=True)
        prompt_length = inputs["input_ids"].shape[1]
        chunk = min(self.candidate_batch_size, len(answers))
        cache.batch_repeat_interleave(chunk)
        pooled = []
        for start in range(0, len(answers), chunk):
            batch = answers[start : start + chunk]
            if len(batch) < chunk:
                cache.batch_select_indices(torch.arange(len(batch)))
            ids, lengths = self._pad(batch)
            offsets = prompt_length + torch.arange(ids.shape[1]) + rope_deltas[0]
            suffix_positions = offsets.view(1, 1, -1).expand(3, len(batch), -1)
            hidden = self._hidden(
                {"input_ids": ids}, position_ids=suffix_positions, cache=cache, use_cache=True
            )
            pooled.append(self._pool(hidden, lengths))
            cache.crop(-ids.shape[1])
        return prefix[0, -1].float().cpu(), torch.cat(pooled)

    def _full_forwards(
        self, inputs: dict[str, torch.Tensor], answers: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Any family: prompt + answer as one sequence per candidate, batched (right-padded)."""
        prompt_length = inputs["input_ids"].shape[1]
        state, pooled = None, []
        for start in range(0, len(answers), self.candidate_batch_size):
            ids, lengths = self._pad(answers[start : start + self.candidate_batch_size])
            hidden = self._hidden(self._append_answers(inputs, ids, lengths))
            state = hidden[0, prompt_length - 1]
            pooled.append(self._pool(hidden[:, prompt_length:], lengths))
        return state.float().cpu(), torch.cat(pooled)

    @staticmethod
    def _append_answers(
        inputs: dict[str, torch.Tensor], ids: torch.Tensor, lengths: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One batch row per answer: the prompt's inputs repeated, the right-padded answer ids
        ``[N, L]`` after them.

        Per-token tensors (``[1, L]``) are extended: ids with the answer, the attention mask with
        1 for real answer tokens, any other (token types) with 0; image tensors are repeated.
        """
        n, prompt_length = ids.shape[0], inputs["input_ids"].shape[1]
        real = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        extended = {}
        for key, value in inputs.items():
            repeated = value.repeat(n, *([1] * (value.dim() - 1)))
            if value.dim() == 2 and value.shape == (1, prompt_length):
                tail = {"input_ids": ids, "attention_mask": real}.get(key, torch.zeros_like(ids))
                repeated = torch.cat([repeated, tail.to(value.dtype)], dim=1)
            extended[key] = repeated
        return extended

    def _pad(self, answers: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad answers into ``[N, L]`` ids; also return their lengths."""
        pad_id = self.processor.tokenizer.pad_token_id or 0
        width = max(len(a) for a in answers)
        ids = torch.full((len(answers), width), pad_id, dtype=torch.long)
        for row, answer in enumerate(answers):
            ids[row, : len(answer)] = torch.tensor(answer, dtype=torch.long)
        return ids, torch.tensor([len(a) for a in answers])


def _fed_answer_mask(answers: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """``[B, T - 1]`` float mask of the generated tokens that were fed back: every token before a row's
    first end of turn (which is generated but never fed).

    Example:
        >>> _fed_answer_mask(torch.tensor([[5, 2, 0], [2, 0, 0], [5, 6, 7]]), 2).tolist()
        [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    """
    eos = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    is_eos = torch.tensor([[int(t) in eos for t in row] for row in answers.tolist()], dtype=torch.bool)
    ended = torch.cumsum(is_eos.long(), dim=1) > 0
    return (~ended[:, :-1]).float() if answers.shape[1] > 1 else torch.zeros(answers.shape[0], 0)


def _check_lengths(**columns: Sequence[Any]) -> None:
    """All per-state arguments have one entry per state."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"one entry per state expected in every argument, got lengths {lengths}")


def _resolve_sibling(critic_config: DigiQCriticModelConfig) -> str | None:
    """The recorded backbone; a ``./`` or ``../`` path is taken relative to the critic's folder."""
    from .critic import is_sibling_reference

    recorded = critic_config.backbone_model_id
    loaded_from = critic_config.name_or_path
    if recorded and is_sibling_reference(recorded) and loaded_from and Path(loaded_from).is_dir():
        return str((Path(loaded_from) / recorded).resolve())
    return recorded
