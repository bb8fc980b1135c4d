import pytest
pytestmark = pytest.mark.services
def test_azurite_roundtrip(azurite, az_container):
    from azure.storage.blob import BlobServiceClient
    c = BlobServiceClient.from_connection_string(azurite["connection_string"]).get_container_client(az_container)
    c.upload_blob("x.txt", b"hi"); assert c.download_blob("x.txt").readall() == b"hi"
def test_pg(postgres):
    import psycopg2
    url = postgres["createdb"]("abc")
    conn = psycopg2.connect(url); cur = conn.cursor(); cur.execute("select 41+1"); assert cur.fetchone()[0] == 42
