"""Pictures: image grids for reconstructions, samples and inpaintings."""
from .grid import PICTURE_FORMATS, check_picture_path, image_grid, save_grid, save_run_picture, tile
from .reconstruction import ReconstructionCallback, reconstruction_columns, reconstruction_grid
from .samples import SampleGridCallback

__all__ = ["PICTURE_FORMATS", "check_picture_path", "image_grid", "save_grid", "save_run_picture", "tile",
           "ReconstructionCallback", "reconstruction_columns", "reconstruction_grid", "SampleGridCallback"]
