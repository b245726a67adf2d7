"""The Qt-free core: images, encoders, the EffiCell model, inference, training, measurement."""
