"""Feature networks for metrics beside the Inception evaluator (PyTorch): DINOv2 ViT-L/14 for
FD_DINOv2. They know nothing of diffusion; they run in their own process (`adm features-dinov2`)
and hand features to the evaluator (evaluations/fd_features.py) as npz files. Layer above adm.nets
(whose checkpoint reader they use)."""
