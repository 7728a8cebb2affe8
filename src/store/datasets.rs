//! Registered datasets: a spec may only name one of these.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DatasetRow {
    pub name: String,
    /// The dataset folder under `$RUSH_HOME/datasets/`.
    pub path: String,
    pub train_images: i64,
    pub classes: i64,
    pub test_images: i64,
    pub registered_at: f64,
}

impl Store {
    /// Registers a dataset, or refreshes its counts when it is registered already.
    pub async fn upsert_dataset(&self, d: &DatasetRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO datasets (name, path, train_images, classes, test_images, registered_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET path = excluded.path, train_images = excluded.train_images,
                 classes = excluded.classes, test_images = excluded.test_images,
                 registered_at = excluded.registered_at",
        )
        .bind(&d.name)
        .bind(&d.path)
        .bind(d.train_images)
        .bind(d.classes)
        .bind(d.test_images)
        .bind(d.registered_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn datasets(&self) -> Result<Vec<DatasetRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM datasets ORDER BY name").fetch_all(&self.reader).await?)
    }

    pub async fn dataset(&self, name: &str) -> Result<Option<DatasetRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM datasets WHERE name = ?").bind(name).fetch_optional(&self.reader).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test]
    async fn register_and_refresh() {
        let (store, _dir) = temp_store().await;
        let mut d = DatasetRow {
            name: "emoji".into(),
            path: "/h/datasets/emoji".into(),
            train_images: 10,
            classes: 3,
            test_images: 4,
            registered_at: 1.0,
        };
        store.upsert_dataset(&d).await.unwrap();
        d.train_images = 20;
        store.upsert_dataset(&d).await.unwrap();
        assert_eq!(store.datasets().await.unwrap(), vec![d.clone()]);
        assert_eq!(store.dataset("emoji").await.unwrap(), Some(d));
        assert_eq!(store.dataset("nope").await.unwrap(), None);
    }
}
