// healthgpt view: writes what the model will see of an input (the 8-bit RGB image after DICOM
// decoding, windowing and slicing) as PNG, for checking. With --model-input it writes the image
// after the reference preprocessing (pad to square, bicubic 336) instead.
#include <cstdio>
#include <memory>

#include "command.h"
#include "core/error.h"
#include "image_options.h"
#include "imaging/load.h"
#include "imaging/preprocess.h"

HG_COMMAND(view, "Write what the model will see of an image/DICOM/NIfTI input as PNG") {
    auto input = std::make_shared<std::string>();
    auto output = std::make_shared<std::string>();
    auto model_input = std::make_shared<bool>(false);
    auto args = std::make_shared<hgcli::ImageArgs>();
    app.add_option("input", *input, "image, DICOM file, DICOM series folder, NIfTI (.nii/.nii.gz) or raw volume")->required();
    app.add_option("-o,--output", *output,
                   "output PNG; with several slices, NAME.png becomes NAME_000.png, NAME_001.png, ...")
        ->required();
    app.add_flag("--model-input", *model_input,
                 "write the 336x336 image after padding to square and bicubic resizing (the CLIP input)");
    hgcli::add_image_options(app, args);
    return [=] {
        hg::imaging::ImageOptions opts = hgcli::finish_image_options(*args);
        hg::imaging::LoadResult res = hg::imaging::load_medical(*input, opts);
        std::filesystem::path out(*output);
        for (size_t i = 0; i < res.images.size(); i++) {
            std::filesystem::path p = out;
            if (res.images.size() > 1) {
                char suffix[32];
                std::snprintf(suffix, sizeof suffix, "_%03zu", i);
                p = out.parent_path() / (out.stem().string() + suffix + out.extension().string());
            }
            const auto& li = res.images[i];
            hg::imaging::RgbImage img = li.image;
            if (*model_input) img = hg::imaging::clip_resize_crop(hg::imaging::expand_to_square(img), 336);
            hg::imaging::write_png(p, img);
            std::printf("%s: %s %s -> %s (%d x %d)\n", input->c_str(), hg::imaging::source_kind_name(res.kind),
                        li.description.c_str(), p.c_str(), img.width, img.height);
        }
        return 0;
    };
}
