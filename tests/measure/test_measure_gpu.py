"""On a CUDA device: labels equal the CPU labels and the greedy decode (fp32), and the
automatic batch size is used. Skips cleanly without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_memorizers import PREFIX, SUFFIX

from kdmem.measure import greedy_continuations, measure_tokens

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["gpt_neox", "olmo2", "qwen3"])
def test_cuda_labels_equal_cpu_and_decode(arch, trained, study_set) -> None:
    model, _, _ = trained[arch]
    cpu, _ = measure_tokens(model, study_set.tokens, PREFIX)
    gpu_model = model.to("cuda")
    try:
        cuda, used = measure_tokens(gpu_model, study_set.tokens, PREFIX)
        dec = greedy_continuations(gpu_model, study_set.tokens[:, :PREFIX], SUFFIX)
    finally:
        model.to("cpu")
    assert used and used[0] >= 1
    np.testing.assert_array_equal(cpu["memorized"], cuda["memorized"])
    same = dec == study_set.tokens[:, PREFIX:]
    np.testing.assert_array_equal(cuda["memorized"], same.all(1))
    np.testing.assert_allclose(cpu["seq_logprob"], cuda["seq_logprob"], rtol=1e-4)
