"""Training-time defenses: models trained so that their robustness is worth certifying.

* :mod:`robustlab.defenses.noise_training` -- Gaussian-noise augmentation (Cohen et al., 2019),
  optionally with consistency regularization (Jeong & Shin, 2020), for randomized smoothing; the
  ``"dual"`` view trains on noisy up-sampled half images for dual randomized smoothing;
* :mod:`robustlab.defenses.denoiser` -- a small convolutional denoiser trained with MSE on noisy
  digits, placed in front of a clean classifier for denoised smoothing (Salman et al., 2020).

Other defenses (e.g. interval-bound-propagation training) are one file each in this package.
"""
