"""The U-Net: the network and device choice (:mod:`.unet`), training (:mod:`.train`), tiled inference of a whole scan
(:mod:`.inference`) and saved model bundles (:mod:`.bundle`)."""
