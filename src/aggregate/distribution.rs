// TEMPORARY STUB
use std::sync::Arc;
#[derive(Debug, Clone, PartialEq)]
pub struct Percentile(f64);
impl Percentile {
    pub fn new(p: f64) -> Result<Percentile, String> {
        Ok(Percentile(p))
    }
    pub fn value(&self) -> f64 {
        self.0
    }
}
#[derive(Debug, Clone, PartialEq)]
pub struct Bins(Vec<f64>);
impl Bins {
    pub fn new(b: Vec<f64>) -> Result<Bins, String> {
        Ok(Bins(b))
    }
    pub fn index(&self, _v: f64) -> usize {
        0
    }
}
#[derive(Debug, Clone)]
pub struct DistributionConfig {
    pub percentiles: Vec<Percentile>,
    pub exact_samples: usize,
}
#[derive(Debug, Default)]
pub struct DistState {
    v: Vec<f64>,
}
impl DistState {
    pub fn add(&mut self, value: f64, _rate: f64, _bins: Option<&Bins>, _exact: usize) {
        self.v.push(value)
    }
    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }
    pub fn take(&mut self) -> DistSnapshot {
        DistSnapshot(std::mem::take(&mut self.v))
    }
}
#[derive(Debug)]
pub struct DistSnapshot(Vec<f64>);
impl DistSnapshot {
    pub fn figures(self, _c: &DistributionConfig, _b: Option<Arc<Bins>>, _i: f64) -> DistFigures {
        DistFigures(self.0.len() as f64)
    }
}
#[derive(Debug, Clone)]
pub struct DistFigures(f64);
impl DistFigures {
    pub fn idle() -> DistFigures {
        DistFigures(0.0)
    }
    pub fn for_each(&self, _c: &DistributionConfig, mut f: impl FnMut(&str, f64)) {
        f("count", self.0)
    }
}
