"""Epoch sampling: the order is a function of seed and epoch, shards cover the set, augmentation is seeded per sample."""
import torch

from blazekit.data.sampler import EpochSampler, SeededDataset

from tests.engine.train_support import SyntheticFaces


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    s = EpochSampler(10, seed=1)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(1)
    b = list(s)
    s.set_epoch(0)
    assert list(s) == a and [i for _, i in a] != [i for _, i in b]
    assert sorted(i for _, i in a) == list(range(10))
    s.set_epoch(0, skip_samples=4)
    assert list(s) == a[4:] and len(s) == 6
    shards = [EpochSampler(10, seed=1, rank=r, world_size=3) for r in range(3)]
    got = [list(x.indices()) for x in shards]
    assert all(len(g) == 4 for g in got) and set(sum(got, [])) == set(range(10))  # padded to 12 by wrapping


def test_seeded_dataset_augments_the_same_whatever_the_order():
    from blazekit.data import build_transforms

    t = build_transforms([{"type": "RandomFaceCrop"}, {"type": "PhotometricJitter"}, {"type": "Letterbox"},
                          {"type": "Normalize"}], input_size=(128, 128))
    ds = SeededDataset(SyntheticFaces(num_images=4, transforms=t), seed=0, transforms=t)
    a = ds[(0, 2)]["image"]
    _ = ds[(0, 1)]
    assert torch.equal(torch.as_tensor(ds[(0, 2)]["image"]), torch.as_tensor(a))
    assert not torch.equal(torch.as_tensor(ds[(1, 2)]["image"]), torch.as_tensor(a))  # new epoch, new draw
