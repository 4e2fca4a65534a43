"""Default model configs (`config.model`): the paper's and small ones."""

from __future__ import annotations

import ml_collections


def paper_model_config() -> ml_collections.ConfigDict:
    """The published AstroM3 architecture with the pre-training dropouts."""
    c = ml_collections.ConfigDict()
    c.task = "clip"  # 'clip' | 'classification'
    c.modalities = ("photometry", "spectra", "metadata")
    c.embed_dim = 512
    c.num_classes = 10
    c.fusion = "avg"  # multimodal classifier: 'avg' (published) | 'concat'
    c.dtype = "float32"  # compute dtype; params are always float32
    # dropout masks: 'hash' (fast counter hash, default) | 'bernoulli' (threefry)
    c.dropout_impl = "hash"
    c.photometry = ml_collections.ConfigDict(
        dict(
            seq_len=200,
            in_channels=9,
            d_model=128,
            n_heads=4,
            d_ff=512,
            n_layers=8,
            dropout=0.245,
            embed_dropout=0.1,
            activation="gelu",
            attention="probsparse",
            probsparse_factor=1,
            reference_reshape=True,
            # 'full' only: jax.nn.dot_product_attention implementation,
            # None (XLA picks), 'xla' or 'cudnn' (fused, GPU, bf16/fp16)
            attention_impl=None,
        )
    )
    c.spectra = ml_collections.ConfigDict(
        dict(
            conv_channels=(3, 64, 64, 32, 32),
            kernel_size=3,
            pool_size=4,
            length=2575,
            dropout=0.339,
        )
    )
    c.metadata = ml_collections.ConfigDict(
        dict(input_dim=34, hidden_dim=512, dropout=0.160)
    )
    return c


def small_model_config() -> ml_collections.ConfigDict:
    """A small model for CPU tests and smoke runs (same structure)."""
    c = paper_model_config()
    c.embed_dim = 32
    c.photometry.update(d_model=32, n_heads=4, d_ff=64, n_layers=2)
    c.spectra.conv_channels = (3, 8, 8, 8, 8)
    c.metadata.hidden_dim = 32
    return c
