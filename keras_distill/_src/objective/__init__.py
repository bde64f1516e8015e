"""The distillation objective: its terms, the feature terms and the table of stored kinds.

`objective.compute` turns a batch's tensors (student outputs, teacher logits
or stored teacher outputs, labels) into the loss; `terms.parse` reads the
`distillation_loss=` argument into output and feature terms;
`stored_kinds` is the one table of teacher outputs that can be stored and
trained from; `features` holds the intermediate-layer terms.
"""

from keras_distill._src.objective.features import FeatureDistillation
from keras_distill._src.objective.stored_kinds import StoredKind, Term, stored_kind

__all__ = ["FeatureDistillation", "StoredKind", "Term", "stored_kind"]
