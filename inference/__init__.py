"""Using a pushed model on people's own photos: predictions, Grad-CAM, contact sheets."""
