"""The vLLM worker extension that loads the learner's weights into a running engine in place.

vLLM mixes the class named by ``LLM(..., worker_extension_cls="seedrl.models.lm.vllm_worker.WeightLoader")``
into its GPU worker class, so these methods run inside the worker, with ``self.model_runner``
(its model runner, whose ``model`` is the vLLM ``nn.Module``) in reach, and
``LLM.collective_rpc("seedrl_load_weights", args=(named_tensors,))`` calls them on every worker
(one here: tensor parallel size 1). The model's own ``load_weights`` takes Hugging Face
checkpoint names and layouts (it is what reads a ``save_pretrained`` folder), so the learner's
``named_parameters()`` go in as they are: vLLM fuses q/k/v, transposes GPT-2's Conv1D weights and
skips tied heads itself. Parameters are copied into the existing tensors (no new allocation,
CUDA graphs stay valid). API as of vLLM 0.22.1 (``vllm/v1/worker/gpu_worker.py``: ``Worker.model_runner``;
``model_runner.model``: the loaded model; ``load_weights(weights: Iterable[tuple[str, Tensor]]) -> set[str]``).

This module imports neither vLLM nor CUDA: vLLM imports it by its qualified name.
"""

from __future__ import annotations

import torch


class WeightLoader:
    """Worker extension: :meth:`seedrl_load_weights` and :meth:`seedrl_weight_names`."""

    def seedrl_load_weights(self, named_tensors) -> int:
        """Copy ``[(hf_name, tensor), ...]`` into the worker's model; returns how many tensors it took."""
        model = self.model_runner.model
        with torch.no_grad():
            loaded = model.load_weights(weights=list(named_tensors))
        return len(loaded) if loaded is not None else len(named_tensors)

    def seedrl_weight_names(self) -> list[str]:
        """The worker model's parameter names (vLLM's layout: fused ``qkv_proj`` etc.), for diagnostics."""
        return [name for name, _ in self.model_runner.model.named_parameters()]
