"""Training-time defenses: the objectives of models trained so that their robustness is worth
certifying. Training itself runs in robustlab's one loop (:mod:`robustlab.training`) through the
registered trainers that use these objectives.

* :mod:`robustlab.defenses.noise_training` -- Gaussian-noise augmentation (Cohen et al., 2019),
  optionally with consistency regularization (Jeong & Shin, 2020), for randomized smoothing; the
  ``"dual"`` view trains on noisy up-sampled half images for dual randomized smoothing (trainer
  ``noise``);
* :mod:`robustlab.defenses.denoiser` -- a small convolutional denoiser and its MSE / stability
  objectives, placed in front of a frozen clean classifier for denoised smoothing (Salman et al.,
  2020; trainer ``denoiser``, base model ``denoised``);
* :mod:`robustlab.defenses.ibp_training` -- the interval-bound-propagation loss and ramp
  (Gowal et al., 2018; trainer ``ibp``).
"""
