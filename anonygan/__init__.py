"""AnonyGAN (Dall'Asen et al., ICIAP 2021): settings (`config`, no torch), model, losses, training, inference,
the released checkpoint reader and the anonymiser."""
