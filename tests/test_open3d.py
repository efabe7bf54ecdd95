import numpy as np

from fgsn.utils.open3d import import_open3d


def test_open3d_imports_and_writes_ply(tmp_path):
    o3d = import_open3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.eye(3)))
    pcd.colors = o3d.utility.Vector3dVector(np.eye(3))
    assert o3d.io.write_point_cloud(str(tmp_path / "p.ply"), pcd)
    assert len(o3d.io.read_point_cloud(str(tmp_path / "p.ply")).points) == 3
