"""The no-code journey for images in a real browser, against a real server and worker: a hostile
archive is refused with its members named; a zip of cifar10-mini images is uploaded in the UI → the dataset page shows images per class and a
thumbnail grid → the wizard (image task detected, image models and image strategies offered)
trains a linear probe on ResNet-20 → the job finishes with its scores → the model page shows the
image API's snippets and misclassified test images → the playground classifies an uploaded image
into class probabilities, and says why a file that is no image cannot be."""

from __future__ import annotations

import re
import time

from image_archives import cifar_image, cifar_zip, hostile_zip


def test_image_journey_upload_train_classify(tab, web_server, tmp_path):
    t0 = time.monotonic()
    tenant = web_server.create_tenant("image-co", "ops@image-co.test")
    archive = cifar_zip(tmp_path / "cifar-mini.zip", per_class=12, test_per_class=4)
    image = tmp_path / "a-cat.jpg"
    image.write_bytes(cifar_image("cat", 0))
    page = tab.page
    tab.sign_in(tenant["api_key"])

    # A hostile archive: refused, each bad member named in the report, nothing stored.
    hostile, bad = hostile_zip(tmp_path / "hostile.zip")
    tab.goto("/datasets")
    page.set_input_files("#file", str(hostile))
    page.get_by_role("button", name="Upload and check").click()
    report = page.locator("#upload-result table.issues")
    report.wait_for(timeout=120_000)
    for member in bad:
        assert member.rsplit("/", 1)[-1] in report.inner_text(), member
    assert page.get_by_text("Nothing was stored.").is_visible()
    tab.shot("29-image-upload-refused")

    # Upload: the archive is recognised by its content and checked image by image.
    tab.goto("/datasets")
    page.set_input_files("#file", str(archive))
    page.get_by_role("button", name="Upload and check").click()
    page.wait_for_url(re.compile(r".*/datasets/file-[0-9a-f]+$"), timeout=120_000)
    dataset_id = page.url.rsplit("/", 1)[1]
    assert "image-classification" in page.locator(".page-head").inner_text()
    thumbs = page.locator("[data-testid=thumbnails] img")
    assert thumbs.count() >= 10
    assert thumbs.first.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("() => document.querySelector('[data-testid=thumbnails] img').naturalWidth") > 0
    assert page.get_by_text("Images per class").is_visible()
    tab.shot("30-image-dataset")

    # The wizard: the image task, the image models, the image strategies; a linear probe on ResNet-20.
    tab.goto(f"/train?dataset={dataset_id}&model=resnet20-cifar10")
    assert page.locator("[data-task=image-classification]").is_visible()
    assert page.locator("input[name=model][value=minilm]").count() == 0
    assert page.locator("input[name=model][value=resnet20-cifar10]").is_checked()
    probe = page.locator("input[name=strategy][value*=probe]").first.get_attribute("value")
    tab.goto(f"/train?dataset={dataset_id}&model=resnet20-cifar10&strategy={probe}")
    tab.shot("31-image-wizard")
    page.get_by_role("button", name=re.compile(r"^Start training")).click()
    page.wait_for_url(re.compile(r".*/jobs/ftjob-[0-9a-f]+$"), timeout=60_000)
    page.wait_for_selector("[data-final-metrics], .alert.error", timeout=600_000)
    assert page.locator(".alert.error").count() == 0, page.locator(".alert.error").inner_text()
    assert page.locator("#job-status").inner_text().strip() == "succeeded"
    tab.shot("32-image-job-finished")

    # The model page: the image API's snippets.
    tab.goto("/models")
    page.locator("a[href^='/models/ft']").first.click()
    page.wait_for_url(re.compile(r".*/models/ft"))
    assert "predict-images" in page.locator("[data-snippet]").first.inner_text()
    # a probe on 120 images misses some of the 40 test images: shown as thumbnails, true → predicted
    missed = page.locator("[data-testid=misclassified] img")
    assert missed.count() >= 1 and missed.first.get_attribute("src").startswith("data:image/png;base64,")
    tab.shot("33-image-model")

    # The playground: an image in, the class probabilities out.
    tab.goto("/playground")
    page.set_input_files("#image-file", str(image))
    page.get_by_role("button", name="Classify").click()
    label = page.locator("#image-prediction .predicted-label")
    label.wait_for(timeout=120_000)
    assert label.get_attribute("data-label") in {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                 "horse", "ship", "truck"}
    assert page.locator("#image-prediction .hbars li").count() == 5         # the top 5 of 10 classes
    assert page.locator("#image-prediction img.image-preview").count() == 1
    notes = tmp_path / "notes.png"          # named like an image, but text
    notes.write_bytes(b"not an image at all")
    page.set_input_files("#image-file", str(notes))
    page.get_by_role("button", name="Classify").click()
    page.locator("#image-prediction .alert.error").wait_for(timeout=60_000)
    assert "image" in page.locator("#image-prediction .alert.error").inner_text().lower()
    tab.shot("34-image-playground")
    print(f"\nimage journey: {time.monotonic() - t0:.0f} s")
