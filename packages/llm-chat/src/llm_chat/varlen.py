"""Variable-length ("varlen") attention on any device: packed dialogs attend per dialog, at per-dialog cost.

Padding-free packing puts a batch's dialogs in one row. transformers then gives sdpa a block-diagonal mask
built from the restarting position_ids, and sdpa computes the whole row (length squared: on CPU every
masked position is computed too), so packing paid for attention it threw away. Flash-attention kernels take
the dialog boundaries instead (`cu_seq_lens_q/k`, the format of transformers' DataCollatorWithFlattening),
but exist only on CUDA. `sdpa_varlen` is sdpa that reads those boundaries: one causal sdpa call per dialog,
so attention costs the sum of the dialogs' squares, on CPU or GPU. Anything else (generation, padded batches,
a KV cache) goes to transformers' own sdpa unchanged.

It is registered under its own name in transformers' AttentionInterface (and sdpa's mask function in
AttentionMaskInterface), so `model.set_attn_implementation(VARLEN)` switches a loaded model. The name is
never saved: config.json does not carry the attention implementation.
"""

from __future__ import annotations

VARLEN = "sdpa_varlen"
# Implementations that read cu_seq_lens_q/k themselves: ours, and transformers' flash-attention kernels.
READS_SEQ_LENS = (VARLEN, "flash_attention_2", "flash_attention_3", "flash_attention_4")


def varlen_sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """sdpa per dialog when the batch is one packed row with its boundaries, else transformers' sdpa.

    query/key/value are [1, heads, T, head_dim] (key/value may have fewer heads: sdpa handles GQA); returns
    ([1, T, heads, head_dim], None) like every transformers attention function.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    packed = cu_q is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
    if not packed or (cu_k is not None and not torch.equal(cu_q, cu_k)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = cu_q.tolist()
    if bounds[0] != 0 or bounds[-1] != query.shape[2]:
        raise ValueError(
            f"cu_seq_lens_q {bounds[:3]}...{bounds[-1]} does not cover the {query.shape[2]} packed tokens"
        )
    window = kwargs.get("sliding_window")
    rest = {k: v for k, v in kwargs.items() if k in ("dropout", "scaling")}
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        n = end - start
        mask = None  # causal within the dialog (sdpa's is_causal)
        if (
            window is not None and n > window
        ):  # the sliding window inside a long dialog, as transformers masks it
            i = torch.arange(n, device=query.device)
            mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
        seg = slice(start, end)
        out, _ = sdpa_attention_forward(
            module, query[:, :, seg], key[:, :, seg], value[:, :, seg], mask, is_causal=True, **rest
        )
        outs.append(out)
    return torch.cat(outs, dim=1), None


def register() -> None:
    """Make `sdpa_varlen` a transformers attention implementation (idempotent)."""
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_sdpa_attention_forward)
    # Padded batches and generation build the usual sdpa mask; a varlen batch carries an all-ones mask, for
    # which sdpa_mask builds nothing (so no [T, T] block-diagonal mask is made only to be ignored).
    AttentionMaskInterface.register(VARLEN, sdpa_mask)


def use_varlen(model) -> bool:
    """Switch an sdpa model to `sdpa_varlen`; True if the model now reads dialog boundaries (also flash)."""
    register()
    impl = model.config._attn_implementation
    if impl == "sdpa":
        model.set_attn_implementation(VARLEN)
        impl = VARLEN
    return impl in READS_SEQ_LENS
