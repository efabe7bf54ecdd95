"""Absolute pose regression (APR) baselines: PoseNet (+ geometric loss), AtLoc / AtLoc+, VLocNet and the
colourization-auxiliary network, with their datasets, training loop (``fgsn-loc train-apr``) and a
:class:`~localization.apr.localizer.APRLocalizer` for the common batch runner.

Pose convention inside this package (all models, datasets and losses): a camera pose is the pair
(``position``, ``qvec``) where ``position`` is the camera centre C in world coordinates and ``qvec`` the unit
quaternion (w, x, y, z) of the world-to-camera rotation R (so ``cam_from_world = [R | -R C]``), kept on the
w >= 0 hemisphere. Models regress positions normalised as ``(C - mean) / scale`` with statistics from the
training split (:class:`localization.apr.data.PoseStats`), stored with every checkpoint.
"""
