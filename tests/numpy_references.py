"""NumPy references the tests compare TensorFlow's results with, written from the formulas."""

import numpy as np


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl(log_p, log_q):
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


def reference_kl(t, s, temperature):
    """T^2 * KL(softmax(t / T) || softmax(s / T)) per row."""
    lt, ls = log_softmax(t / temperature), log_softmax(s / temperature)
    return temperature**2 * kl(lt, ls)


def reference(name, t, s, temperature):
    """The reference of a divergence of `keras_distill.losses` by name, per row."""
    lt, ls = log_softmax(t / temperature), log_softmax(s / temperature)
    if name == "kl_divergence":
        return temperature**2 * kl(lt, ls)
    if name == "reverse_kl_divergence":
        return temperature**2 * kl(ls, lt)
    if name == "jensen_shannon_divergence":
        lm = np.log(0.5 * (np.exp(lt) + np.exp(ls)))
        return temperature**2 * 0.5 * (kl(lt, lm) + kl(ls, lm))
    return ((t - s) ** 2).mean(-1)
