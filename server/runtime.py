"""onnxruntime sessions for one model variant, on CPU or CUDA. No gRPC here."""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bertserve.server.errors import DeviceError

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which container runtimes set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_device(device: str) -> None:
    """Raise DeviceError with the fix when ``device`` cannot be used."""
    import onnxruntime as ort

    if device == "cuda" and CUDA not in ort.get_available_providers():
        raise DeviceError(
            "--device cuda needs onnxruntime-gpu and a CUDA GPU, but onnxruntime "
            f"{ort.__version__} offers only {ort.get_available_providers()}; install it with "
            "pip install -e '.[gpu]' in the bertserve checkout (in place of onnxruntime) on "
            "a machine with a GPU, "
            "or use --device cpu"
        )


class ModelRuntime:
    """``instances`` onnxruntime sessions of one model.onnx; :meth:`run` is thread-safe.

    Each instance gets its share of the cores (intra-op threads), so instances run side by
    side without oversubscribing the CPU.
    """

    def __init__(
        self,
        model_path: Path,
        device: str = "cpu",
        intra_op_threads: int = 0,
        instances: int = 1,
        spin_wait: bool = False,
    ) -> None:
        import onnxruntime as ort

        check_device(device)
        self.device = device
        threads = intra_op_threads or max(1, available_cpus() // instances)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not spin_wait:
            # the intra-op threads sleep after a run instead of holding the cores that the
            # event loop needs to answer and to take the next requests
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [CUDA, "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self._sessions: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(instances):
            session = ort.InferenceSession(str(model_path), options, providers=providers)
            self._sessions.put(session)
        self.instances = instances
        self.intra_op_threads = threads
        self.provider = session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise DeviceError(
                f"onnxruntime did not place {model_path} on CUDA (got {self.provider})"
            )
        self.output_names = [o.name for o in session.get_outputs()]
        self.input_names = [i.name for i in session.get_inputs()]
        missing = [name for name in INPUTS if name not in self.input_names]
        if missing:
            raise ValueError(
                f"{model_path}: inputs {missing} missing; the model has {self.input_names}"
            )

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray,
        outputs: list[str],
    ) -> dict[str, np.ndarray]:
        """Run one padded batch, all inputs (batch, seq) int64; only ``outputs`` are fetched.

        Returns name -> array: (batch, seq, hidden) or (batch, hidden), float32 (float16 for fp16).
        """
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        session = self._sessions.get()
        try:
            if self.device == "cuda":
                # IO binding: inputs copied once, and only the wanted outputs come back to host.
                binding = session.io_binding()
                for name, value in feeds.items():
                    binding.bind_cpu_input(name, np.ascontiguousarray(value))
                for name in outputs:
                    binding.bind_output(name, "cuda")
                session.run_with_iobinding(binding)
                values = binding.copy_outputs_to_cpu()
            else:
                values = session.run(outputs, feeds)
        finally:
            self._sessions.put(session)
        return dict(zip(outputs, values, strict=True))

    def warm_up(self) -> None:
        """Run every instance once on a tiny batch, so the first request pays no setup cost."""
        ids = np.zeros((1, 3), dtype=np.int64)  # id 0 is in every vocabulary, however small
        for _ in range(self.instances):
            self.run(ids, np.ones_like(ids), np.zeros_like(ids), self.output_names)

    def time_batches(
        self, shapes: Sequence[tuple[int, int]], repeats: int = 3, output: str = "last_hidden_state"
    ) -> list[tuple[int, int, float]]:
        """(size, length, seconds) of one run of each (size, length) batch: the median of
        ``repeats`` runs, after one untimed run of each shape (onnxruntime plans per shape)."""
        samples = []
        for size, length in shapes:
            # every id costs the same; 0 is in every vocabulary (a small one has no 1996 or 101)
            ids = np.zeros((size, length), dtype=np.int64)
            mask, types = np.ones_like(ids), np.zeros_like(ids)
            self.run(ids, mask, types, [output])
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                self.run(ids, mask, types, [output])
                times.append(time.perf_counter() - started)
            samples.append((size, length, float(np.median(times))))
        return samples
