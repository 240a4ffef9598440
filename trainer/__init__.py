"""Model code that TFX's Transform and Trainer call: preprocessing_fn and run_fn."""
