"""`--arch t5_small` and `--arch t5_tiny`: fairseq's transformer shaped and parameterised
like T5 (model `t5_transformer`, a thin subclass of fairseq's `transformer`).

t5_small has T5-small's shape (Raffel et al. 2020): 6 encoder + 6 decoder layers, model
width 512, 8 heads, feed-forward 2048, ReLU, pre-norm residual blocks (a norm before each
sub-layer and one after the stack), one embedding matrix shared by encoder input, decoder
input and output projection. With T5's 32k vocabulary it has about 60M parameters, as the
paper's T5 runs did. t5_tiny is the same recipe at CPU size (2+2 layers, width 128 unless
--encoder-embed-dim etc. say otherwise) for the CPU preset and tests.

As T5 does it with tied embeddings (the subclass's only changes):
- the shared embedding is initialised N(0, 1) and not scaled by sqrt(width) at the input;
- the decoder output is scaled by width^-0.5 before the tied output projection.
At initialisation this computes the same function as fairseq's parameterisation (fairseq:
N(0, 1/width) embeddings times sqrt(width) at the input, unscaled logits), but the
embedding's root mean square is 1, as in T5, which matters to Adafactor with
--scale-parameter: its step on a tensor is lr x RMS(tensor).

What still differs from T5, and why (each keeps fairseq's stock, tested modules):
- positions: fairseq's fixed sinusoidal absolute positions instead of T5's learned
  relative-position buckets in every attention layer (fairseq has no relative attention
  bias for its transformer); inputs are bounded by --max-source-positions.
- norm: LayerNorm (centred, with bias) instead of T5's RMSNorm without bias.
- biases: fairseq's linear layers carry biases; T5's have none (about 0.1M parameters).
- attention logits are scaled by 1/sqrt(head dim) at run time; T5 folds that factor into
  its query projection's initialisation.
- initialisation of the linear layers: fairseq's Xavier-uniform (fan_in + fan_out) instead
  of T5's N(0, fan_in^-0.5) family, so Adafactor's relative steps on them start from
  somewhat different scales.
- dropout: t5_small 0.1 as T5; t5_tiny 0 (a minutes-long CPU run underfits).
- the vocabulary is whatever dict.txt holds (T5: 32k sentencepiece pieces, padded to
  32128 rows); fairseq adds its 4 specials (<s> <pad> </s> <unk>).
Everything else about T5 pretraining (span corruption, Adafactor, inverse-sqrt schedule)
comes from the task and optimizer flags, not the architecture.
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerDecoderBase, TransformerModel
from fairseq.models.transformer.transformer_legacy import base_architecture
from torch import nn


class T5OutputScaledDecoder(TransformerDecoderBase):
    """fairseq's decoder whose features are scaled by width^-0.5 before a tied output
    projection (T5, Raffel et al. 2020: "rescale output before projecting on vocab")."""

    def output_layer(self, features):
        if self.share_input_output_embed:
            features = features * self.output_embed_dim ** -0.5
        return super().output_layer(features)


@register_model("t5_transformer")
class T5Transformer(TransformerModel):
    """fairseq's transformer with T5's embedding parameterisation (see the module doc)."""

    @classmethod
    def build_embedding(cls, args, dictionary, embed_dim, path=None):
        emb = super().build_embedding(args, dictionary, embed_dim, path)
        if not path:  # T5 initialises its shared embedding with unit variance
            nn.init.normal_(emb.weight, mean=0.0, std=1.0)
            nn.init.zeros_(emb.weight[dictionary.pad()])
        return emb

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return T5OutputScaledDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)


def _t5_common(args):
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", True)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", True)
    args.activation_fn = getattr(args, "activation_fn", "relu")
    # unit-variance embeddings enter unscaled (fairseq would multiply by sqrt(width))
    args.no_scale_embedding = getattr(args, "no_scale_embedding", True)
    base_architecture(args)


@register_model_architecture("t5_transformer", "t5_small")
def t5_small(args):
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 2048)
    args.encoder_layers = getattr(args, "encoder_layers", 6)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 8)
    args.dropout = getattr(args, "dropout", 0.1)  # T5's dropout rate
    _t5_common(args)


@register_model_architecture("t5_transformer", "t5_tiny")
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
