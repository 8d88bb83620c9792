"""Diffusion as data and maths: schedules and respacing, the Gaussian diffusion (q_sample,
posterior, p_mean_variance), losses and timestep samplers. Imports adm.nets at most."""
