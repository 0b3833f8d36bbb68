"""--guided-groups: parsing, assignment by parameter name, and the checkpoint check."""
import pytest
import torch
from fairseq.optim import build_optimizer
from omegaconf import OmegaConf

import fairseq_guided  # noqa: F401 (registers the guided optimizers)
from fairseq_guided import channels as flat_masters
from fairseq_guided.flags import parse_groups
from fairseq_guided.param_groups import assign_groups, check_same_grouping, warnings_for

# fairseq's transformer (2+2 layers, shared embeddings, pre-norm), as named_parameters()
# lists it, and a criterion parameter
NAMES = (
    ["encoder.embed_tokens.weight"]
    + [f"encoder.layers.{i}.{m}" for i in range(2) for m in ("self_attn.k_proj.weight", "fc1.weight")]
    + ["encoder.layer_norm.weight"]
    + [f"decoder.layers.{i}.{m}" for i in range(2) for m in ("encoder_attn.q_proj.weight", "fc2.bias")]
    + ["decoder.layer_norm.weight", "decoder.output_projection.weight", "criterion.temperature"]
)


def groups_of(spec):
    grouping = assign_groups(parse_groups(spec), NAMES)
    return grouping, {n: grouping.groups[g] for n, g in zip(NAMES, grouping.group_of)}


def test_global_is_no_grouping():
    assert parse_groups("global") is None


def test_module_prefixes_first_listed_match_wins_and_the_rest_is_other():
    grouping, of = groups_of("embed,encoder,decoder")
    assert grouping.groups == ["embed", "encoder", "decoder", "other"]
    assert of["encoder.embed_tokens.weight"] == "embed"
    assert of["encoder.layers.1.fc1.weight"] == of["encoder.layer_norm.weight"] == "encoder"
    assert of["decoder.output_projection.weight"] == of["decoder.layers.0.fc2.bias"] == "decoder"
    assert grouping.unmatched() == ["criterion.temperature"]
    assert "1 parameter tensors match no group" in warnings_for(grouping)[0]
    # `encoder` also matches the decoder's cross-attention (a part starting 'encoder_'); the
    # first listed group takes it, and the start-up warning says so
    assert of["decoder.layers.0.encoder_attn.q_proj.weight"] == "encoder"
    assert grouping.contested == [("encoder.embed_tokens.weight", ["encoder"]),
                                  ("decoder.layers.0.encoder_attn.q_proj.weight", ["decoder"]),
                                  ("decoder.layers.1.encoder_attn.q_proj.weight", ["decoder"])]
    assert ("3 parameter tensors match more than one group; the first listed takes each: "
            "encoder.embed_tokens.weight (to embed, not encoder), decoder.layers.0.encoder_attn.q_proj.weight "
            "(to encoder, not decoder)") in warnings_for(grouping)[1]
    reordered, of = groups_of("embed,decoder,encoder")
    assert of["decoder.layers.1.encoder_attn.q_proj.weight"] == "decoder"
    assert of["encoder.layers.0.fc1.weight"] == "encoder" and len(reordered.contested) == 3
    # a prefix must end at a part boundary: 'encoder.layers.1' does not take layers.10
    _, of = groups_of("encoder.layers.1,decoder")
    assert of["encoder.layers.1.fc1.weight"] == "encoder.layers.1"
    assert of["encoder.layers.0.fc1.weight"] == "other"
    assert assign_groups(parse_groups("encoder.layers.1"), ["encoder.layers.10.fc1.weight"]).group_of == [1]


def test_layer_groups_embed_each_layer_output_and_other():
    grouping, of = groups_of("layer")
    assert grouping.groups == ["embed", "encoder.layers.0", "encoder.layers.1", "decoder.layers.0",
                               "decoder.layers.1", "output", "other"]
    assert of["decoder.layers.1.encoder_attn.q_proj.weight"] == "decoder.layers.1"
    assert of["decoder.output_projection.weight"] == "output"
    assert grouping.unmatched() == ["encoder.layer_norm.weight", "decoder.layer_norm.weight",
                                    "criterion.temperature"]
    assert grouping.empty_groups() == [] and grouping.contested == []


def test_regular_expressions_and_a_group_that_matches_nothing():
    grouping, of = groups_of(r"attn=_attn\.;ffn=\.fc\d;norms=layer_norm;convs=conv")
    assert of["decoder.layers.0.encoder_attn.q_proj.weight"] == of["encoder.layers.0.self_attn.k_proj.weight"] == "attn"
    assert of["encoder.layers.1.fc1.weight"] == "ffn"
    assert of["decoder.layer_norm.weight"] == "norms"
    assert of["encoder.embed_tokens.weight"] == "other"
    assert grouping.empty_groups() == ["convs"]
    assert any("group 'convs' matches no parameter" in w for w in warnings_for(grouping))


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("embed,,decoder", "an empty group name"),
    ("a=[unclosed", "bad regular expression"),
    ("a=x;b", "expected NAME=REGEX"),
    ("encoder,encoder", "named twice"),
    ("encoder,other", "'other' cannot name a group"),
    ("enc oder", "may hold only letters"),
], ids=["empty", "empty-name", "bad-regex", "missing-regex", "twice", "other", "space"])
def test_bad_values_are_refused_naming_the_flag(text, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_groups(text)
    assert str(err.value).startswith("--guided-groups")


def test_a_checkpoint_with_another_grouping_is_refused():
    saved = assign_groups(parse_groups("embed,encoder,decoder"), NAMES).as_dict()
    check_same_grouping(saved, assign_groups(parse_groups("embed,encoder,decoder"), NAMES).as_dict())
    with pytest.raises(ValueError, match="trained with --guided-groups 'embed,encoder,decoder'.*"
                                         "this run has --guided-groups 'layer'"):
        check_same_grouping(saved, assign_groups(parse_groups("layer"), NAMES).as_dict())
    with pytest.raises(ValueError, match="this run has --guided-groups global"):
        check_same_grouping(saved, None)
    # the same groups holding other parameters (here: a regex that moved the norms)
    a = assign_groups(parse_groups("x=layer_norm;y=fc"), NAMES).as_dict()
    b = assign_groups(parse_groups("x=encoder.layer_norm;y=fc"), NAMES).as_dict()
    b["spec"] = a["spec"]
    with pytest.raises(ValueError, match="decoder.layer_norm.weight: x -> other"):
        check_same_grouping(a, b)


class EncoderDecoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh())
        self.decoder = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def registry_optimizer(model, groups, name="guided_lamb"):
    """A guided optimizer built as fairseq-train builds it, after a guided task recorded
    the model's layout."""
    flat_masters.record_layout("model", model)
    flat_masters.record_layout("criterion", torch.nn.Module())
    cfg = OmegaConf.create({"_name": name, "lr": [0.01], "guided_hparams": "alpha,beta1",
                            "guided_meta_lr": 0.01, "guided_groups": groups})
    return build_optimizer(cfg, [p for p in model.parameters()])


def test_the_fairseq_optimizer_groups_its_tensors_and_checkpoints_the_grouping():
    model = EncoderDecoder()
    optimizer = registry_optimizer(model, "encoder,decoder")
    guided = optimizer.guided
    assert guided.learned.groups == ["encoder", "decoder"] and guided.learned.shape == (2, 2)
    assert [(g["learned_group"], [p.shape for p in g["params"]]) for g in guided.param_groups] == \
        [(0, [(8, 6), (8,)]), (1, [(3, 8), (3,)])]
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        optimizer.step()
        h = guided.hypergradient([torch.ones_like(p) for _, p in guided.stepped_params()])
        guided.learned.meta_step(h)
    assert h.shape == (2, 2) and (h[0] != h[1]).all()
    state = optimizer.state_dict()
    assert state["guided_grouping"]["assignment"]["decoder.weight"] == "decoder"
    same = registry_optimizer(EncoderDecoder(), "encoder,decoder")
    same.load_state_dict(state)
    assert torch.equal(same.guided.learned.raw, guided.learned.raw)
    other = registry_optimizer(EncoderDecoder(), "decoder")  # encoder.* now in 'other'
    with pytest.raises(ValueError, match="trained with --guided-groups 'encoder,decoder'"):
        other.load_state_dict(state)


def test_tensors_the_task_did_not_name_are_refused():
    model = EncoderDecoder()
    flat_masters.record_layout("model", torch.nn.Linear(2, 2))  # another model's layout
    cfg = OmegaConf.create({"_name": "guided_adam", "lr": [0.01], "guided_groups": "layer"})
    with pytest.raises(ValueError, match="--guided-groups 'layer' needs the names of the 4 tensors"):
        build_optimizer(cfg, list(model.parameters()))
    with pytest.raises(ValueError, match="--guided-groups: bad regular expression|--guided-groups: group"):
        build_optimizer(OmegaConf.create({"_name": "guided_adam", "lr": [0.01], "guided_groups": "a=("}),
                        list(model.parameters()))
