"The decoded-once data path (appendix 92a) where a notebook can't show it: a GPU's device, fastai's other loaders"
import pytest
import torch
from fastai.callback.core import CancelFitException
from fastai.data.core import TfmdDL
from fastai.learner import Learner
from fastai.vision.augment import Resize
from fastai.vision.models.xresnet import xresnet18

import imagenette_course.fast_data as fast_data
from imagenette_course.data import get_dls
from imagenette_course.fast_data import DecodeOnce, StoreDL, store_dls


def test_decoded_images_go_to_the_loaders_device_not_the_new_models(fake_imagenette, monkeypatch):
    "On a GPU the loaders are on it while a new model is still on the CPU: the stored images must follow the loaders"
    seen = []
    def record_device(dls, device=None):
        seen.append(device)
        raise CancelFitException  # nothing to train: only where the images would go
    monkeypatch.setattr(fast_data, 'store_dls', record_device)
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0)
    dls.device = torch.device('meta')  # stands for the GPU: any device but the model's
    learn = Learner(dls, xresnet18(n_out=dls.c), cbs=DecodeOnce())
    learn.fit(1)
    assert seen == [torch.device('meta')]


def test_other_item_transforms_get_fastais_own_loader(fake_imagenette):
    "`learn.tta(item_tfms=...)` asks for other per-item transforms: the stored images can't honour them"
    fast = store_dls(get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0))
    assert type(fast.valid.new(shuffle=False)) is StoreDL
    other = fast.valid.new(after_item=[Resize(48), *fast.valid.after_item.fs[1:]])
    assert type(other) is TfmdDL and other.new(after_batch=[]).one_batch()[0].shape[-1] == 48  # before the GPU crop


def test_a_loader_with_before_batch_transforms_is_refused(fake_imagenette):
    dls = get_dls(bs=4, size=32, path=fake_imagenette, num_workers=0, before_batch=[lambda b: b])
    with pytest.raises(ValueError, match='before_batch'): store_dls(dls)
