//! An embedded Kafka for the demo: librdkafka's in-process mock cluster.
//!
//! Created through a client with `test.mock.num.brokers` so we hold the raw cluster handle
//! and can set the group initial-rebalance delay to 0 (not exposed by rust-rdkafka). The mock
//! cluster keeps ~5 MiB per partition and enforces no transactions: fine for a demo.

use std::ffi::{CStr, CString};

use anyhow::{bail, Context};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

/// A running in-process mock Kafka cluster; lives as long as this value.
pub struct EmbeddedKafka {
    owner: BaseProducer,
    bootstrap: String,
}

impl EmbeddedKafka {
    pub fn start(brokers: u32) -> anyhow::Result<Self> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()
            .context("creating the embedded mock Kafka cluster")?;
        let cluster =
            unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
        if cluster.is_null() {
            bail!("librdkafka did not create a mock cluster");
        }
        unsafe { rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        let bootstrap =
            unsafe { CStr::from_ptr(rdkafka_sys::rd_kafka_mock_cluster_bootstraps(cluster)) }
                .to_string_lossy()
                .into_owned();
        Ok(EmbeddedKafka { owner, bootstrap })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let cluster =
            unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(self.owner.client().native_ptr()) };
        let topic = CString::new(name)?;
        let err = unsafe {
            rdkafka_sys::rd_kafka_mock_topic_create(cluster, topic.as_ptr(), partitions, 1)
        };
        if err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("creating mock topic {name}: {err:?}");
        }
        Ok(())
    }
}
