"""ID-SIM: dlib embeddings separate identities on real frames; VGG-Face fc8 plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.eval.conftest import frame_path
from thead.eval.idsim import DlibEmbedder, VGGFaceEmbedder, cosine_similarity

PEOPLE = ("id00017", "id00061", "id00081")


@pytest.fixture(scope="module")
def faces(fsth, detector):
    """Per person: a test frame and a train frame, with the test frame's landmarks."""
    from thead.faces.images import load_image

    out = {}
    for person in PEOPLE:
        test = load_image(frame_path(fsth, "test", person, 0))
        train = load_image(frame_path(fsth, "train", person, 16))
        out[person] = (test, detector.detect(test)[0].landmarks, train, detector.detect(train)[0].landmarks)
    return out


@pytest.mark.parametrize("alignment", [68, 5])
def test_dlib_same_identity_scores_higher_than_different(faces, alignment):
    emb = DlibEmbedder(alignment=alignment)
    test = emb.embed([faces[p][0] for p in PEOPLE], [faces[p][1] for p in PEOPLE])
    train = emb.embed([faces[p][2] for p in PEOPLE], [faces[p][3] for p in PEOPLE])
    assert test.shape == (3, 128)
    sim = np.array([[cosine_similarity(test[i : i + 1], train[j : j + 1])[0] for j in range(3)] for i in range(3)])
    same, different = np.diag(sim), sim[~np.eye(3, dtype=bool)]
    assert same.min() > different.max(), sim  # every person is closest to themself
    assert same.mean() - different.mean() > 0.04, sim


def test_identical_frames_give_id_sim_one(faces):
    image, landmarks = faces["id00017"][:2]
    emb = DlibEmbedder()
    e = emb.embed([image, image.copy()], [landmarks, landmarks])
    assert cosine_similarity(e[:1], e[1:])[0] == pytest.approx(1.0, abs=1e-12)


def test_both_frames_are_aligned_with_the_reference_landmarks(faces):
    # A generated frame is cut where the ground truth's face is, even when its own face is gone.
    image, landmarks = faces["id00017"][:2]
    chips = DlibEmbedder().chips([image, np.zeros_like(image)], [landmarks, landmarks])
    assert chips[0].shape == chips[1].shape == (150, 150, 3)
    assert chips[0].std() > 20 and chips[1].max() == 0


def test_vggface_embedder_plumbing(frame):
    vgg = pytest.importorskip("thead.nn.backbones.vgg", reason="thead.nn.backbones.vgg (VGG-Face) not written yet")
    torch.manual_seed(0)
    net = vgg.VGGFace(widths=(4, 8, 8, 8, 8), fc_width=16)  # reduced width, random weights
    emb = VGGFaceEmbedder(net)
    e = emb.embed([frame, frame, 255 - frame], [None] * 3)
    assert e.shape == (3, 2622) and e.dtype == np.float64
    assert cosine_similarity(e[:1], e[1:2])[0] == pytest.approx(1.0, abs=1e-12)
    assert not np.allclose(e[0], e[2])
