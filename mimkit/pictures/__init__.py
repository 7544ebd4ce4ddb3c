"""Pictures: image grids for reconstructions, samples and inpaintings."""
from .grid import image_grid, save_grid, tile
from .reconstruction import ReconstructionCallback, reconstruction_columns, reconstruction_grid
from .samples import SampleGridCallback

__all__ = ["image_grid", "save_grid", "tile", "ReconstructionCallback", "reconstruction_columns",
           "reconstruction_grid", "SampleGridCallback"]
