"""The CPU model runner with interventions: three interleaving phases per engine step.

vLLM 0.32's V1 runner splits a step into ``execute_model`` (update the batch,
forward pass, logits) and ``sample_tokens`` (sampling). This subclass hooks:

1. ``_update_states``: new requests' interventions are loaded and started,
   finished ones leave; the step's batch groups are laid out;
2. ``_model_forward``: the forward pass, token-level groups (module outputs are
   flat ``[total_tokens, ...]`` tensors);
3. after ``execute_model``: ``model.logits`` with the logits, one row per
   request (a swapped value is what gets sampled);
4. ``_sample``: ``model.samples`` with the sampled token ids, one row per request; then the
   step is over (``tracer.iter`` loops whose step start was deferred are woken).

Steps without interventions run exactly as in vLLM.
"""
from typing import Any, Optional

from vllm.v1.worker.cpu_model_runner import CPUModelRunner

from .requests import RequestHelper
from .worker_model import WorkerModel


class NNsightCPUModelRunner(CPUModelRunner):
    """``CPUModelRunner`` plus interventions (see the module docstring)."""

    nnsight_model: WorkerModel = None  # type: ignore[assignment]
    nnsight_requests: RequestHelper = None  # type: ignore[assignment]
    _nnsight_active = False

    def load_model(self, *args, **kwargs) -> None:
        super().load_model(*args, **kwargs)
        self.nnsight_model = WorkerModel(self.model)
        self.nnsight_requests = RequestHelper(self.nnsight_model)

    # ------------------------------------------------------------ phase 1: the batch

    def _update_states(self, scheduler_output) -> Any:
        helper = self.nnsight_requests
        if helper is None:
            return super()._update_states(scheduler_output)
        helper.finished(scheduler_output.finished_req_ids)
        helper.add_requests(scheduler_output)
        result = super()._update_states(scheduler_output)
        self._nnsight_active = bool(helper.requests) and helper.schedule(
            list(self.input_batch.req_ids), scheduler_output.num_scheduled_tokens)
        return result

    # ------------------------------------------------------------ phase 2: forward

    def _model_forward(self, input_ids=None, positions=None, intermediate_tensors=None, inputs_embeds=None,
                       **model_kwargs) -> Any:
        if not self._nnsight_active:
            return super()._model_forward(input_ids, positions, intermediate_tensors, inputs_embeds, **model_kwargs)
        total = int(positions.shape[-1]) if positions is not None else int(
            (input_ids if input_ids is not None else inputs_embeds).shape[0])
        # The runner keeps these in buffers it refills every step: an intervention that saves one (a
        # module's input is often `positions` itself) would otherwise read a later step's values by
        # the time the trace collects its saves. Copies cost a few microseconds a step.
        input_ids = input_ids.clone() if input_ids is not None else None
        positions = positions.clone() if positions is not None else None
        inputs_embeds = inputs_embeds.clone() if inputs_embeds is not None else None
        helper = self.nnsight_requests
        helper.begin("tokens", total)
        try:
            return super()._model_forward(input_ids, positions, intermediate_tensors, inputs_embeds,
                                          **model_kwargs)
        finally:
            helper.end_phase()

    # ------------------------------------------------------------ phase 3: logits

    def execute_model(self, scheduler_output, intermediate_tensors=None) -> Any:
        self._nnsight_active = False
        output = super().execute_model(scheduler_output, intermediate_tensors)
        state = self.execute_model_state
        if self._nnsight_active and state is not None and state.logits is not None:
            logits = self._nnsight_provide("logits", state.logits)
            if logits is not state.logits:
                self.execute_model_state = state._replace(logits=logits)
        elif self._nnsight_active:  # no logits, so no sampling phase either: the step ends here
            self.nnsight_model.interleaver.end_step()
        return output

    # ------------------------------------------------------------ phase 4: samples

    def _sample(self, logits, spec_decode_metadata) -> Any:
        output = super()._sample(logits, spec_decode_metadata)
        if self._nnsight_active:
            output.sampled_token_ids = self._nnsight_provide("samples", output.sampled_token_ids)
            self._nnsight_active = False
        if self.nnsight_model is not None:
            self.nnsight_model.interleaver.end_step()  # step starts still deferred (interleaver docstring)
        return output

    def _nnsight_provide(self, name: str, value: Any) -> Any:
        helper = self.nnsight_requests
        helper.begin("rows", int(value.shape[0]))
        try:
            provider = self.nnsight_model._children[name]
            return self.nnsight_model.interleaver.offer_through(provider.path, provider._module, value)
        finally:
            helper.end_phase()

    # ------------------------------------------------------------ RPC targets

    def nnsight_collect(self, trace_id: str, outputs: bytes, final: bool, local: bool = False,
                        caller_pid: Optional[int] = None) -> dict:
        return self.nnsight_requests.collect(trace_id, outputs, final, local, caller_pid)

    def nnsight_stopped(self, trace_id: str) -> list:
        return self.nnsight_requests.stopped(trace_id)
