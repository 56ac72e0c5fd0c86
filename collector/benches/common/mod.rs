//! Shared by the X-Ray benches.

/// A realistic segment document with a distinct id per `seed`.
pub(crate) fn sample_document(seed: u64) -> Vec<u8> {
    let start = 1_795_964_593.25 + (seed % 1000) as f64 / 1000.0;
    serde_json::json!({
        "id": format!("{:016x}", seed | 1 << 60),
        "name": "shop",
        "trace_id": format!("1-6b0c3eb1-{:024x}", u128::from(seed) | 1u128 << 80),
        "start_time": start, "end_time": start + 0.35, "in_progress": false,
        "http": {"request": {"method": "POST", "url": "https://shop.example.com/checkout", "client_ip": "10.0.0.7", "user_agent": "Mozilla/5.0"}, "response": {"status": 200, "content_length": 512}},
        "aws": {"xray": {"sdk": "X-Ray for Python", "sdk_version": "2.15.0"}, "ec2": {"instance_id": "i-0abc", "availability_zone": "us-east-1a"}},
        "service": {"runtime": "CPython", "runtime_version": "3.12.3"},
        "annotations": {"customer": "c-42", "items": 3, "total": 19.5, "vip": true},
        "metadata": {"default": {"cart": {"skus": ["a-1", "b-2", "c-3"], "coupon": null}}},
        "user": "alice",
        "subsegments": [
            {"id": format!("{:016x}", seed | 2 << 60), "name": "api.example.com", "namespace": "remote", "start_time": start + 0.01, "end_time": start + 0.1, "in_progress": false,
             "http": {"request": {"method": "GET", "url": "https://api.example.com/prices"}, "response": {"status": 200}}},
            {"id": format!("{:016x}", seed | 3 << 60), "name": "DynamoDB", "namespace": "aws", "start_time": start + 0.11, "end_time": start + 0.2, "in_progress": false,
             "http": {"response": {"status": 200}}, "aws": {"operation": "GetItem", "region": "us-east-1", "request_id": "Q1R2S3", "table_name": "carts", "retries": 0}},
            {"id": format!("{:016x}", seed | 4 << 60), "name": "validate-cart", "namespace": "local", "start_time": start + 0.21, "end_time": start + 0.3, "in_progress": false, "fault": true,
             "cause": {"working_directory": "/srv/shop", "exceptions": [{"id": format!("{:016x}", seed | 5 << 60), "message": "cart is empty", "type": "ValueError", "remote": false,
                "stack": [{"path": "/srv/shop/app.py", "line": 73, "label": "checkout"}, {"path": "/srv/shop/cart.py", "line": 12, "label": "validate"}]}]}}
        ]
    })
    .to_string()
    .into_bytes()
}
