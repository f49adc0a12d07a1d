pub use wecom_edge_model as model;
