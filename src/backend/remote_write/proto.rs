//! Prometheus remote write 1.0's messages (prometheus/prompb `remote.proto` and
//! `types.proto`, the fields 1.0 uses), declared with prost so no protoc runs at build time.
//! The encoder writes these bytes by hand (see [`super::encoder`]); the messages decode them
//! in tests and document the wire format.

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, `__name__` among them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: the timestamp in Unix milliseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Field keys (field number << 3 | wire type) the encoder writes.
pub(super) mod key {
    /// WriteRequest.timeseries, TimeSeries.labels, Label.name: length-delimited field 1.
    pub const LEN_1: u8 = 0x0a;
    /// TimeSeries.samples, Label.value: length-delimited field 2.
    pub const LEN_2: u8 = 0x12;
    /// Sample.value: 64-bit field 1.
    pub const FIXED64_1: u8 = 0x09;
    /// Sample.timestamp: varint field 2.
    pub const VARINT_2: u8 = 0x10;
}
