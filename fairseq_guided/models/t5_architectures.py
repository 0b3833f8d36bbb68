"""`--arch t5_small` and `--arch t5_tiny`: fairseq's transformer shaped like T5.

t5_small has T5-small's shape (Raffel et al. 2020): 6 encoder + 6 decoder layers, model
width 512, 8 heads, feed-forward 2048, ReLU, pre-norm residual blocks (a norm before each
sub-layer and one after the stack), one embedding matrix shared by encoder input, decoder
input and output projection. With T5's 32k vocabulary it has about 60M parameters, as the
paper's T5 runs did. t5_tiny is the same recipe at CPU size (2+2 layers, width 128) for
minute-long smoke runs and tests.

What differs from T5, and why (all choices that keep fairseq's stock, tested modules, so a
checkpoint loads in plain fairseq-train/-generate):
- positions: fairseq's fixed sinusoidal absolute positions instead of T5's learned
  relative-position buckets in every attention layer (fairseq has no relative attention
  bias for its transformer); this also means inputs are bounded by --max-source-positions.
- norm: LayerNorm (centred, with bias) instead of T5's RMSNorm without bias.
- biases: fairseq's linear layers carry biases; T5's have none (about 0.1M parameters).
- embeddings are scaled by sqrt(width) at the input (fairseq's default); T5 does not scale
  but initialises them with unit variance, which amounts to the same input scale.
- attention logits are scaled by 1/sqrt(head dim); T5 folds that into its initialisation.
Everything else about T5 pretraining (span corruption, Adafactor, inverse-sqrt schedule)
comes from the task and optimizer flags, not the architecture.
"""
from fairseq.models import register_model_architecture
from fairseq.models.transformer.transformer_legacy import base_architecture


def _t5_common(args):
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", True)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", True)
    args.activation_fn = getattr(args, "activation_fn", "relu")
    base_architecture(args)


@register_model_architecture("transformer", "t5_small")
def t5_small(args):
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 2048)
    args.encoder_layers = getattr(args, "encoder_layers", 6)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 8)
    args.dropout = getattr(args, "dropout", 0.1)  # T5's dropout rate
    _t5_common(args)


@register_model_architecture("transformer", "t5_tiny")
def t5_tiny(args):
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 128)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 512)
    args.encoder_layers = getattr(args, "encoder_layers", 2)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    # a minutes-long run on plenty of text underfits: dropout would only slow it
    args.dropout = getattr(args, "dropout", 0.0)
    _t5_common(args)
