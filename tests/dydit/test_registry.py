"""Model names (dydit/registry.py): every name, what it means, and what it builds."""
import pytest
import torch

from dydit.models import DiT, DyDiT
from dydit.registry import MODELS, SIZES, ModelEntry, create_model, entry


def test_every_name_of_the_old_comprehension_and_no_other():
    """The names models.py generated before the registry wrote them out, in the same order."""
    sizes = ("Mini", "Mini-64", "Mini-32", "S", "B", "L", "XL")
    old = [f"{prefix}-{size}/{p}" for prefix in ("DiT", "DyDiT", "SiT", "DySiT") for size in sizes for p in (2, 4, 8)]
    assert list(MODELS) == old and len(MODELS) == 84 and tuple(SIZES) == sizes
    assert all(isinstance(e, ModelEntry) and e.name == name for name, e in MODELS.items())


def test_an_entry_says_what_its_name_means():
    e = entry("DyDiT-XL/2")
    assert (e.family, e.is_dynamic, e.size, e.patch, e.static, e.dynamic) == ("DiT", True, "XL", 2, "DiT-XL/2",
                                                                             "DyDiT-XL/2")
    assert (e.objective, e.is_mini, e.label) == ("diffusion", False, "DiT-XL")
    s = entry("SiT-Mini-32/4")
    assert (s.family, s.is_dynamic, s.static, s.dynamic) == ("SiT", False, "SiT-Mini-32/4", "DySiT-Mini-32/4")
    assert (s.objective, s.is_mini, s.label, s.hidden_size) == ("flow", True, "SiT-Mini-32", 32)
    for e in MODELS.values():  # the counterparts are registered, and are each other's
        assert entry(e.static).dynamic == e.dynamic and entry(e.dynamic).static == e.static
        assert e.name == (e.dynamic if e.is_dynamic else e.static)


def test_unknown_names_raise_key_error_listing_the_known_ones():
    for get in (entry, create_model):
        with pytest.raises(KeyError, match="unknown model 'DiT-XXL/2'; known: DiT-Mini/2, .*DyDiT-XL/2"):
            get("DiT-XXL/2")


def test_build_as_the_old_factories_did():
    """Same class, dims and defaults (SiT: no learned sigma; Mini: 16 x 16 x 1, 10 classes); kwargs win."""
    with torch.device("meta"):
        sit = create_model("DySiT-S/4")
        mini = create_model("SiT-Mini-64/8", learn_sigma=True, num_classes=3)
        dit = create_model("DiT-B/2")
    assert type(sit) is DyDiT and (len(sit.blocks), sit.num_heads, sit.out_channels, sit.input_size) == (12, 6, 4, 32)
    assert type(mini) is DiT and (mini.input_size, mini.in_channels, mini.out_channels) == (16, 1, 2)
    assert mini.y_embedder.embedding_table.num_embeddings == 4 and mini.x_embedder.proj.kernel_size == (8, 8)
    assert type(dit) is DiT and (dit.out_channels, dit.x_embedder.proj.out_channels) == (8, 768)
    torch.manual_seed(0)
    a = entry("DySiT-Mini/2").build(input_size=8)
    torch.manual_seed(0)
    b = DyDiT(depth=4, hidden_size=128, num_heads=4, patch_size=2, input_size=8, in_channels=1, num_classes=10,
              learn_sigma=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
