"""Pictures: image grids for reconstructions, samples and inpaintings."""
from .grid import image_grid, save_grid
from .reconstruction import ReconstructionCallback, reconstruction_columns, reconstruction_grid

__all__ = ["image_grid", "save_grid", "ReconstructionCallback", "reconstruction_columns",
           "reconstruction_grid"]
